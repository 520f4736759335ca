"""Representation probe guard: a linear classifier reads the guarded model's own hidden state at the
end of the prompt and decides, before a single token is generated, whether to refuse.

A small model's generated safety reasoning often decides on topic (it refuses a request and its benign
twin alike); its hidden state at the last prompt token carries more of the request's intent. The probe
is a logistic regression on that state at one layer, or the mean in logit space of one such regression
per layer over the few best layers, fitted on labelled requests, ideally each under the same attack
templates it will meet, with benign requests under the templates too, so that a template alone is not
a reason to refuse. Layers and threshold are chosen by grouped cross-validation: a request's attacked
forms (and its twin, when a group is given) never straddle train and test folds.

    probe = fit_probe(model, harmful_convs, benign_convs, groups=...)
    probe.save("probe.json")
    guard = GUARDS.create("probe", path="probe.json", then="r2d-pivot")
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from ..errors import SafethinkError, SpecError
from ..io import atomic_write_text
from ..models import ChatModel, Conversation, GenerationConfig, ProgressFn
from ._base import GUARDS, GuardedOutput
from ._core import GuardBase, GuardKind, refusal, text
from ._filters import _hf_parts
from ._tuned import TunedProbe, load_probe

Pool = Literal["last", "mean"]
PROBE_FORMAT = "safethink-probe/1"
PROBE_TARGETS = ("intent", "wrapper")
"""What a probe scores: ``intent`` (is the request harmful) or ``wrapper`` (does an attack wrap it)."""


def _adapter_off(model: ChatModel, why: str) -> Any:
    """A context manager under which ``model`` runs as its base model (no-op without an adapter)."""
    import contextlib

    net, _ = _hf_parts(model, "probe")
    if not getattr(model, "adapter", None):
        return contextlib.nullcontext
    if not hasattr(net, "disable_adapter"):
        raise SpecError(f"cannot switch off the adapter of {model.spec} to {why}")
    return net.disable_adapter


def prompt_states(model: ChatModel, conversations: Sequence[Conversation], *, layers: Sequence[int] | None = None,
                  pool: Pool = "last", batch_size: int = 16, base: bool = False,
                  progress: ProgressFn | None = None) -> Any:
    """Hidden states of each conversation rendered with the generation prompt, shape
    ``(n, len(layers), hidden)`` as float32 numpy: the state at the last prompt token (``last``) or the
    mean over the prompt (``mean``). Layer 0 is the embeddings; ``None`` means every layer. ``base``
    reads the base model's states with the model's adapter switched off."""
    import contextlib

    import numpy as np
    import torch

    net, tok = _hf_parts(model, "probe")
    texts = [model.render(c) for c in conversations]
    lengths = [len(tok(t, add_special_tokens=False).input_ids) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])  # batches of similar length pad little
    device = next(net.parameters()).device
    out: list[Any] = [None] * len(texts)
    side = tok.padding_side
    off = _adapter_off(model, "read the base model's states") if base else contextlib.nullcontext
    try:
        tok.padding_side = "right"
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.inference_mode(), off():
                hs = _hidden_states(net, enc)
                pick = range(len(hs)) if layers is None else layers
                for k in pick:
                    if not 0 <= k < len(hs):
                        raise SpecError(f"probe layer {k} is out of range; the model has layers 0..{len(hs) - 1}")
                mask = enc.attention_mask
                n = mask.sum(dim=1)
                if pool == "last":  # right padding: the last real token is at n - 1
                    rows = torch.arange(len(idx), device=mask.device)
                    h = torch.stack([hs[k][rows, n - 1].float() for k in pick], dim=1)  # (b, L, d)
                else:
                    w = mask.unsqueeze(-1).float()
                    h = torch.stack([(hs[k].float() * w).sum(dim=1) / n.unsqueeze(-1) for k in pick], dim=1)
                del hs
            for b, i in enumerate(idx):
                out[i] = h[b].cpu().numpy()
            if progress:
                progress(len(idx))
    finally:
        tok.padding_side = side
    if not out:
        return np.zeros((0, 0, 0), dtype=np.float32)
    return np.stack(out).astype(np.float32)


def _hidden_states(net: Any, enc: Any) -> Any:
    """Every layer's hidden states of a batch. The language-model head runs on the last position only
    (``logits_to_keep=1``) where the model takes it: full-sequence logits over a large vocabulary cost more
    memory than all the hidden states together."""
    try:
        return net(**enc, output_hidden_states=True, logits_to_keep=1).hidden_states
    except TypeError as e:
        if "logits_to_keep" not in str(e):
            raise
        return net(**enc, output_hidden_states=True).hidden_states


@dataclass
class RequestProbe:
    """A fitted probe: standardise the state at ``layer`` (at each of the layers, concatenated, when
    ``layer`` is a list), then ``sigmoid(w . x + b)`` is p(harmful).

    A list of layers is an ensemble: one logistic regression per layer, their logits averaged, which is
    one linear model on the concatenated states (each layer's weights divided by the number of layers,
    the mean of their biases), so ``mean``, ``scale`` and ``weight`` hold ``len(layer) * hidden`` values."""

    layer: int | list[int]
    pool: Pool
    mean: list[float]
    scale: list[float]
    weight: list[float]
    bias: float
    threshold: float
    """p(harmful) at or above which a request is refused."""
    model: str
    """The model spec the probe was fitted on (its hidden states are what the weights read)."""
    adapter: str | None = None
    route_threshold: float | None = None
    """p(harmful) below which the probe guard's ``route="base"`` lets the base model answer: the highest
    cut at which at most ``max_fnr`` of the harmful training forms fall below it, out of fold."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Cross-validation results: AUC per layer and per ensemble size, the chosen probe's rates at the threshold, counts."""
    target: str = "intent"
    """What the score is the probability of: ``intent``, a harmful request; ``wrapper``, a request (of any
    intent) inside an attack's template or encoding (see :data:`PROBE_TARGETS`)."""

    @property
    def layers(self) -> list[int]:
        """The layers read, in the order of the weights."""
        return list(self.layer) if isinstance(self.layer, list) else [self.layer]

    def probabilities(self, states: Any) -> Any:
        """p(harmful) for states of shape ``(n, hidden)`` taken at :attr:`layer`, or ``(n, len(layers),
        hidden)`` taken at :attr:`layers`."""
        import numpy as np

        x = np.asarray(states, dtype=np.float64)
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] != len(self.weight):
            raise SpecError(f"probe reads {len(self.layers)} layer(s), {len(self.weight)} values in all; "
                            f"got states of {x.shape[1]}")
        x = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        z = x @ np.asarray(self.weight) + self.bias
        return 1.0 / (1.0 + np.exp(-z))

    def mismatch(self, model: ChatModel, *, base: bool = False) -> str | None:
        """Why this probe cannot guard ``model`` (its states, or with ``base`` its base model's), or None."""
        adapter = None if base else getattr(model, "adapter", None)
        if self.model == model.spec and _same_adapter(self.adapter, adapter):
            return None
        fitted = self.model + (f" with adapter {self.adapter}" if self.adapter else "")
        here = model.spec + (f" with adapter {adapter}" if adapter else "")
        return (f"the probe was fitted on {fitted}, but the guarded model is {here}; "
                "fit a probe on this model (safethink probe fit)")

    def score(self, model: ChatModel, conversations: Sequence[Conversation], *, batch_size: int = 16,
              base: bool = False) -> list[float]:
        """p(harmful) of each conversation under ``model`` (which should be the model it was fitted on;
        ``base``: its base model, with the adapter switched off)."""
        if not conversations:
            return []
        states = prompt_states(model, conversations, layers=self.layers, pool=self.pool, batch_size=batch_size,
                               base=base)
        if states.shape[-1] * len(self.layers) != len(self.weight):
            raise SpecError(f"probe reads hidden states of size {len(self.weight) // len(self.layers)}; "
                            f"{model.spec} has {states.shape[-1]}")
        return [float(p) for p in self.probabilities(states)]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        atomic_write_text(path, json.dumps({"format": PROBE_FORMAT, **asdict(self)}, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> RequestProbe:
        path = Path(path)
        if not path.is_file():
            raise SpecError(f"probe file {path} does not exist (fit one with: safethink probe fit ...)")
        probe = _load_json_as(cls, path, PROBE_FORMAT, "probe file", "probe file")
        if not (len(probe.weight) == len(probe.mean) == len(probe.scale)) or not probe.weight:
            raise SpecError(f"{path}: weight, mean and scale must be non-empty and of one length")
        check_target(probe, path)
        if not probe.layers or len(probe.weight) % len(probe.layers):
            raise SpecError(f"{path}: {len(probe.weight)} weights do not split evenly over layers {probe.layers}")
        return probe


def check_target(probe: Any, path: Path) -> None:
    if probe.target not in PROBE_TARGETS:
        raise SpecError(f"{path}: target {probe.target!r} is not one of {', '.join(PROBE_TARGETS)}")


def _load_json_as(cls: Any, path: Path, fmt: str, kind: str, malformed: str, /, **extra: Any) -> Any:
    """``cls(**fields)`` from a JSON file whose ``"format"`` is ``fmt``; errors name the file and what is wrong."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SpecError(f"{path}: not a probe file (line {e.lineno}: {e.msg})") from None
    if not isinstance(raw, dict) or raw.get("format") != fmt:
        raise SpecError(f"{path}: not a {kind} (expected \"format\": \"{fmt}\")")
    raw.pop("format")
    try:
        return cls(**raw, **extra)
    except TypeError as e:
        raise SpecError(f"{path}: malformed {malformed} ({e})") from None


def _threshold_at_fpr(benign_scores: Sequence[float], max_fpr: float) -> float:
    """The smallest threshold at which at most ``max_fpr`` of the benign scores are ``>=`` it."""
    s = sorted(benign_scores, reverse=True)
    allowed = math.floor(max_fpr * len(s) + 1e-9)  # this many benign requests may be refused
    if allowed >= len(s):
        return 0.0
    # strictly above the (allowed+1)-th highest benign score
    return float(math.nextafter(s[allowed], math.inf))


def _route_at_fnr(harmful_scores: Sequence[float], max_fnr: float) -> float:
    """The highest cut with at most ``max_fnr`` of the harmful scores strictly below it."""
    s = sorted(harmful_scores)
    allowed = math.floor(max_fnr * len(s) + 1e-9)  # this many harmful requests may fall below
    return 1.0 if allowed >= len(s) else float(s[allowed])


def fit_probe(model: ChatModel, harmful: Sequence[Conversation], benign: Sequence[Conversation], *,
              groups: Sequence[str] | None = None, layers: Sequence[int] | None = None, pool: Pool = "last",
              batch_size: int = 16, progress: ProgressFn | None = None, **options: Any) -> RequestProbe:
    """Fit a probe on ``harmful`` (label 1) and ``benign`` (label 0) conversations under ``model``.

    ``groups`` (one per conversation, harmful then benign) keeps related conversations in one fold: give
    every attacked form of a request, and its benign twin, the same group. ``layers=None`` tries every
    layer but the embeddings. ``options`` go to :func:`fit_probe_on_states` (``c``, ``folds``, ``max_fpr``,
    ``seed``, ``negative_kinds``, ``max_negatives_fpr``).
    """
    if not harmful or not benign:
        raise SpecError("fitting a probe needs both harmful and benign requests")
    states = prompt_states(model, [*harmful, *benign], layers=layers, pool=pool, batch_size=batch_size,
                           progress=progress)
    layer_ids = list(range(states.shape[1])) if layers is None else list(layers)
    return fit_probe_on_states(states, [1] * len(harmful) + [0] * len(benign), groups, layer_ids=layer_ids,
                               candidates=None if layers is not None else layer_ids[1:], pool=pool,
                               model=model.spec, adapter=getattr(model, "adapter", None), **options)


def fit_probe_on_states(states: Any, labels: Sequence[int], groups: Sequence[str] | None, *,
                        layer_ids: Sequence[int], candidates: Sequence[int] | None = None, pool: Pool = "last",
                        model: str, adapter: str | None = None, c: float = 0.1, folds: int = 5,
                        max_fpr: float = 0.05, max_fnr: float = 0.05, seed: int = 0,
                        ensembles: Sequence[int] = (1, 3, 5, 8), negative_kinds: Sequence[str | None] | None = None,
                        max_negatives_fpr: float = 0.02) -> RequestProbe:
    """:func:`fit_probe` on states already computed (``prompt_states`` of the labelled conversations,
    whose axis 1 holds ``layer_ids``). One regression per layer among ``candidates`` (default all) is
    cross-validated; for each size ``k`` in ``ensembles``, the ``k`` layers of best out-of-fold AUC are
    averaged in logit space, and the size whose averaged out-of-fold scores have the best AUC is kept
    (ties: the smaller; ``ensembles=(1,)`` keeps the single best layer). The threshold is the lowest at
    which at most ``max_fpr`` of the benign conversations are refused out of fold; the route threshold
    the highest at which at most ``max_fnr`` of the harmful ones score below it out of fold. ``c`` is the
    inverse L2 strength of the logistic regression.

    ``negative_kinds`` (one per conversation) marks the extra benign negatives that look like real use
    (requests with pasted material, a persona, earlier turns) with their kind, ``None`` elsewhere. The
    threshold then also keeps at most ``max_negatives_fpr`` of those out of fold: their scores come from
    regressions that never saw their group (a group of shared material is one fold), so the rate is an
    estimate for unseen requests of the same kinds, not a rate on requests fitted on. ``metrics["negatives"]``
    records which criterion set the threshold and the out-of-fold rate, overall and per kind."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold

    if not 0 <= max_fpr < 1:
        raise SpecError(f"max_fpr must be in [0, 1), got {max_fpr}")
    if not 0 <= max_fnr < 1:
        raise SpecError(f"max_fnr must be in [0, 1), got {max_fnr}")
    if not ensembles or min(ensembles) < 1:
        raise SpecError(f"ensemble sizes must be positive, got {list(ensembles)}")
    if not 0 <= max_negatives_fpr < 1:
        raise SpecError(f"max_negatives_fpr must be in [0, 1), got {max_negatives_fpr}")
    y = np.asarray(labels)
    kinds = list(negative_kinds) if negative_kinds is not None else [None] * len(y)
    if len(kinds) != len(y) or any(k is not None and t for k, t in zip(kinds, y)):
        raise SpecError(f"negative_kinds: expected one per conversation ({len(y)}, got {len(kinds)}), set on benign "
                        "conversations only")
    g = list(groups) if groups is not None else [str(i) for i in range(len(y))]
    if len(g) != len(y) or states.shape[0] != len(y):
        raise SpecError(f"{states.shape[0]} states, {len(y)} labels and {len(g)} groups: expected one of each per conversation")
    layer_ids = list(layer_ids)
    cands = [layer_ids.index(k) for k in (candidates if candidates is not None else layer_ids)]
    n_groups = len(set(g))
    k = min(folds, len({x for x, t in zip(g, y) if t}), len({x for x, t in zip(g, y) if not t}))
    if k < 2:
        raise SpecError("fitting a probe needs at least two harmful and two benign groups for cross-validation")

    def standardise(x: Any) -> tuple[Any, Any, Any]:
        mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-6
        return (x - mu) / sd, mu, sd

    splits = list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(y.reshape(-1, 1), y, g))
    auc: dict[int, float] = {}
    oofs: dict[int, Any] = {}  # out-of-fold logits per layer
    for j in cands:
        x = states[:, j].astype(np.float64)
        oof = np.zeros(len(y))
        for tr, te in splits:
            xt, mu, sd = standardise(x[tr])
            clf = LogisticRegression(C=c, max_iter=2000).fit(xt, y[tr])
            oof[te] = clf.decision_function((x[te] - mu) / sd)
        auc[layer_ids[j]] = float(roc_auc_score(y, oof))
        oofs[layer_ids[j]] = oof
    ranked = sorted(auc, key=lambda L: (-auc[L], L))
    by_size: dict[int, float] = {}
    for size in sorted(set(min(n, len(ranked)) for n in ensembles)):
        by_size[size] = float(roc_auc_score(y, np.mean([oofs[L] for L in ranked[:size]], axis=0)))
    size = max(by_size, key=lambda n: (by_size[n], -n))
    chosen = sorted(ranked[:size])
    oof = 1.0 / (1.0 + np.exp(-np.mean([oofs[L] for L in chosen], axis=0)))
    threshold, negatives = threshold_with_negatives(oof, y, kinds, max_fpr=max_fpr, max_negatives_fpr=max_negatives_fpr)
    route = min(_route_at_fnr(oof[y == 1].tolist(), max_fnr), threshold)
    mus, sds, ws, bs = [], [], [], []
    for L in chosen:  # the averaged regressions as one linear model on the concatenated states
        xs, mu, sd = standardise(states[:, layer_ids.index(L)].astype(np.float64))
        clf = LogisticRegression(C=c, max_iter=2000).fit(xs, y)
        mus.append(mu)
        sds.append(sd)
        ws.append(clf.coef_[0] / size)
        bs.append(float(clf.intercept_[0]))
    metrics = {
        "auc_by_layer": auc, "auc_by_ensemble_size": by_size, "auc": by_size[size], "folds": k,
        "oof_harmful_flagged": float((oof[y == 1] >= threshold).mean()),
        "oof_benign_flagged": float((oof[y == 0] >= threshold).mean()),
        "oof_harmful_routed": float((oof[y == 1] < route).mean()),
        "oof_benign_routed": float((oof[y == 0] < route).mean()), "max_fnr": max_fnr,
        "n_harmful": int(y.sum()), "n_benign": int((1 - y).sum()), "n_groups": n_groups, "c": c, "max_fpr": max_fpr,
        **({"negatives": negatives} if negatives else {}),
    }
    return RequestProbe(layer=chosen[0] if size == 1 else chosen, pool=pool, mean=np.concatenate(mus).tolist(),
                        scale=np.concatenate(sds).tolist(), weight=np.concatenate(ws).tolist(),
                        bias=float(np.mean(bs)), threshold=threshold, model=model, adapter=adapter,
                        route_threshold=route, metrics=metrics)


def threshold_with_negatives(scores: Any, labels: Any, kinds: Sequence[str | None], *, max_fpr: float,
                             max_negatives_fpr: float, held_out: str = "group k-fold (a group's forms share a fold)"
                             ) -> tuple[float, dict[str, Any]]:
    """The threshold on held-out ``scores`` that refuses at most ``max_fpr`` of the benign conversations and at
    most ``max_negatives_fpr`` of those with a kind (the realistic negatives), and what it was set by: the
    record kept in the probe file's ``metrics["negatives"]`` (empty when no conversation has a kind)."""
    import numpy as np

    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    base = _threshold_at_fpr(s[y == 0].tolist(), max_fpr)
    marked = np.array([k is not None for k in kinds], dtype=bool)
    if not marked.any():
        return base, {}
    own = _threshold_at_fpr(s[marked].tolist(), max_negatives_fpr)
    threshold = max(base, own)
    by_kind = {}
    for kind in sorted({k for k in kinds if k is not None}):
        sel = np.array([k == kind for k in kinds], dtype=bool)
        by_kind[kind] = {"n": int(sel.sum()), "flagged": float((s[sel] >= threshold).mean())}
    return threshold, {
        "n": int(marked.sum()), "max_fpr": max_negatives_fpr, "held_out": held_out,
        "threshold_set_by": "max_negatives_fpr" if own > base else "max_fpr",
        "threshold_at_max_fpr": base, "threshold_at_max_negatives_fpr": own,
        "held_out_flagged": float((s[marked] >= threshold).mean()),
        "held_out_flagged_at_max_fpr": float((s[marked] >= base).mean()), "by_kind": by_kind,
    }


def _same_adapter(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a == b
    return Path(a).resolve() == Path(b).resolve() if Path(a).exists() and Path(b).exists() else a == b


@GUARDS.register()
@dataclass
class ProbeGuard(GuardBase):
    """Refuse a request when a linear probe on the model's hidden state at the end of the prompt says it
    is harmful; otherwise hand the request to the ``then`` guard (``none``: the model answers as is).

    The probe is fitted on the guarded model (``safethink probe fit``); a probe fitted on another model or
    adapter reads states it has never seen, so that is an error unless ``check_model=False``. With
    ``states="base"`` a probe fitted on the base model guards any adapter on it: the probe reads the
    base model's states (adapter switched off for that one forward pass) and the adapter answers.

    ``route="base"`` makes it a three-way router for an adapter on a base model: requests the probe is
    sure are benign (below the route threshold) are answered by the base model as is, adapter off; those
    between the two thresholds by the adapter through ``then``; those above are refused. The adapter's
    over-refusal then only reaches the requests the probe is unsure of.

    ``wrapper_path`` adds a wrapper probe (``safethink probe fit --target wrapper``): a request it flags (it
    came encoded or inside an attack's template, whatever it asks) is refused with :attr:`wrapper_message`
    before the intent probe is consulted. The intent probe then only has to judge requests as users write
    them, which is where telling a harmful request from its same-topic twin is possible at all.
    """

    name: ClassVar[str] = "probe"
    kind: ClassVar[GuardKind] = "filter"

    path: str | None = None
    """A probe file from ``safethink probe fit`` / :meth:`RequestProbe.save`, or a tuned probe directory
    (``safethink probe fit --tune`` / :meth:`TunedProbe.save`)."""
    probe: RequestProbe | TunedProbe | None = None
    """An in-memory probe instead of ``path``."""
    threshold: float | None = None
    """Override the probe's own threshold on p(harmful)."""
    then: str = "none"
    """The guard that handles requests the probe lets through (any registered guard)."""
    then_args: dict[str, Any] = field(default_factory=dict)
    message: str | None = None
    """Refusal text; default from prompts.yaml."""
    states: Literal["model", "base"] = "model"
    """Read the guarded model's own states, or its base model's (adapter off)."""
    route: Literal["none", "base"] = "none"
    """``base``: the base model (adapter off) answers requests scoring below the route threshold."""
    route_threshold: float | None = None
    """Override the probe's own route threshold (:attr:`RequestProbe.route_threshold`)."""
    check_model: bool = True
    wrapper_path: str | None = None
    """A wrapper probe (file or tuned directory) from ``safethink probe fit --target wrapper``."""
    wrapper_probe: RequestProbe | TunedProbe | None = None
    """An in-memory wrapper probe instead of ``wrapper_path``."""
    wrapper_threshold: float | None = None
    """Override the wrapper probe's own threshold."""
    wrapper_message: str | None = None
    """Refusal text for a wrapped request; default from prompts.yaml."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.path is None) == (self.probe is None):
            raise SpecError("guard 'probe': give exactly one of path= (a probe file) or probe=")
        if self.probe is None:
            self.probe = load_probe(self.path)  # type: ignore[arg-type]
        if self.wrapper_path is not None and self.wrapper_probe is not None:
            raise SpecError("guard 'probe': give at most one of wrapper_path= or wrapper_probe=")
        if self.wrapper_path is not None:
            self.wrapper_probe = load_probe(self.wrapper_path)
        if self.wrapper_probe is not None and self.wrapper_probe.target != "wrapper":
            raise SpecError(f"guard 'probe': the wrapper probe {self.wrapper_path or ''} scores "
                            f"{self.wrapper_probe.target!r}, not 'wrapper' (fit one with safethink probe fit "
                            "--target wrapper)")
        for name in ("threshold", "route_threshold", "wrapper_threshold"):
            v = getattr(self, name)
            if v is not None and not 0 <= v <= 1:
                raise SpecError(f"guard 'probe': {name} is a probability in [0, 1], got {v}")
        if self.route not in ("none", "base"):
            raise SpecError(f"guard 'probe': route is 'none' or 'base', got {self.route!r}")
        if self.route == "base" and self.route_threshold is None and self.probe.route_threshold is None:
            raise SpecError("guard 'probe': route='base' needs a route threshold; this probe file has none "
                            "(refit it with safethink probe fit, or pass route_threshold=)")
        if self.then == self.name:
            raise SpecError("guard 'probe': then= cannot be another probe guard")
        try:
            self.inner = GUARDS.create(self.then, **self.then_args)
        except SafethinkError as e:
            raise SpecError(f"guard 'probe': then={self.then!r}: {e}") from None

    def options(self) -> dict[str, Any]:
        opts = super().options()
        opts.pop("probe")
        opts.pop("wrapper_probe", None)
        return opts

    def _check(self, model: ChatModel) -> None:
        assert self.probe is not None
        if not self.check_model:
            return
        for what, p in (("", self.probe), ("wrapper ", self.wrapper_probe)):
            why = p.mismatch(model, base=self.states == "base") if p is not None else None
            if why:
                raise SpecError(f"guard 'probe': {what}{why} or pass check_model=False")

    def generate(self, model: ChatModel, conversations: Sequence[Conversation], config: GenerationConfig,
                 *, progress: ProgressFn | None = None) -> list[GuardedOutput]:
        assert self.probe is not None
        self._check(model)
        threshold = self.probe.threshold if self.threshold is None else self.threshold
        wrapped: dict[int, float] = {}
        w_cut = 1.0
        if self.wrapper_probe is not None:
            w_cut = self.wrapper_probe.threshold if self.wrapper_threshold is None else self.wrapper_threshold
            w_scores = self.wrapper_probe.score(model, conversations, batch_size=config.batch_size,
                                                base=self.states == "base")
            wrapped = {i: s for i, s in enumerate(w_scores) if s >= w_cut}
        rest = [i for i in range(len(conversations)) if i not in wrapped]
        scores = dict(zip(rest, self.probe.score(model, [conversations[i] for i in rest],
                                                 batch_size=config.batch_size, base=self.states == "base")))
        cut = -1.0
        if self.route == "base":
            if not getattr(model, "adapter", None):
                raise SpecError(f"guard 'probe': route='base' routes between an adapter and its base model; "
                                f"{model.spec} has no adapter")
            cut = self.probe.route_threshold if self.route_threshold is None else self.route_threshold
            cut = min(cut, threshold)  # type: ignore[type-var]
        low = [i for i, s in scores.items() if s < cut]
        passed = [i for i, s in scores.items() if cut <= s < threshold]
        answered: dict[int, GuardedOutput] = {}
        if low:
            with _adapter_off(model, "answer with the base model")():
                answered.update(zip(low, GUARDS.create("none").generate(model, [conversations[i] for i in low],
                                                                        config, progress=progress)))
        if passed:
            answered.update(zip(passed, self.inner.generate(model, [conversations[i] for i in passed], config,
                                                            progress=progress)))
        msg = self.message or text("refusal", "default")
        outs = []
        for i in range(len(conversations)):
            if i in wrapped:
                outs.append(refusal(self.wrapper_message or text("refusal", "wrapper"), action="blocked",
                                    wrapper_score=wrapped[i], wrapper_threshold=w_cut))
                if progress:
                    progress(1)
                continue
            s = scores[i]
            info = {"probe_score": s, "probe_threshold": threshold}
            if self.route == "base":
                info["probe_route_threshold"] = cut
            if i in answered:
                o = answered[i]
                o.info = {**o.info, **info, **({"answered_by": "base" if s < cut else "adapter"}
                                               if self.route == "base" else {})}
                outs.append(o)
            else:
                outs.append(refusal(msg, action="blocked", **info))
                if progress:
                    progress(1)
        return outs
