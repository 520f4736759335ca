"""The tuned probe: a probe whose read-out comes from the model's own lower blocks, adapted with LoRA.

A linear probe reads a frozen hidden state. The tuned probe trains LoRA on the first ``layer`` blocks of
the base model together with a linear head on the state at the last prompt token of block ``layer``
(the blocks above it are dropped: they never run), with binary cross-entropy on labelled requests. A
share of the groups (a request, its twin and all their attacked forms together) is kept out of training
to set the threshold and the route threshold, as cross-validation does for the linear probe. It costs a
short fine-tuning run instead of a regression, and its own copy of the lower blocks at inference.

    probe = fit_tuned_probe(model, harmful_convs, benign_convs, groups=...)
    probe.save("probe_dir")            # probe.json + adapter/
    guard = GUARDS.create("probe", path="probe_dir", then="r2d")   # safethink.guard
"""

from __future__ import annotations

import copy
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SpecError
from ..io import atomic_write_text
from ..models import ChatModel, Conversation, ProgressFn
from ..models._base import length_batches
from ._base import TUNED_FORMAT, read_probe_json
from ._cv import route_at_fnr, threshold_with_negatives
from ._states import model_parts


@dataclass
class TunedProbe:
    """p(harmful) = ``sigmoid(head . h + bias)``, ``h`` the final-normed state of block ``layer`` at the last
    prompt token, computed by the LoRA-adapted lower blocks of :attr:`model` kept in ``<dir>/adapter``."""

    model: str
    """The base model's spec; the tuned probe runs its own adapted copy of its lower blocks."""
    layer: int
    weight: list[float]
    bias: float
    threshold: float
    route_threshold: float | None = None
    rank: int = 8
    metrics: dict[str, Any] = field(default_factory=dict)
    target: str = "intent"
    """``intent`` or ``wrapper``, as :attr:`~safethink.probes.RequestProbe.target`."""
    path: str | None = None
    """The directory it was saved to or loaded from."""
    _net: Any = field(default=None, repr=False, compare=False)
    _tok: Any = field(default=None, repr=False, compare=False)
    _render: Any = field(default=None, repr=False, compare=False)
    _head: Any = field(default=None, repr=False, compare=False)

    adapter = None  # fitted on the base model, whatever adapter the guarded model carries
    pool = "last"

    @property
    def layers(self) -> list[int]:
        return [self.layer]

    def _ensure(self) -> None:
        if self._net is not None:
            return
        from peft import PeftModel

        from ..models import load_model

        if self.path is None:
            raise SpecError("tuned probe: neither a trained network in memory nor a directory to load it from")
        # fp32 whatever this machine's "auto" would pick: the adapter and head were fitted in fp32 (LoRA weights are
        # kept in fp32), so scores and thresholds read the same on any machine.
        base = load_model(self.model, dtype="float32")
        net, tok = model_parts(base)
        _truncate(net, self.layer)
        self._net = PeftModel.from_pretrained(net, str(Path(self.path) / "adapter")).eval()
        self._tok, self._render = tok, base.render

    def _head_module(self) -> Any:
        import torch

        if self._head is None:
            head = torch.nn.Linear(len(self.weight), 1)
            with torch.no_grad():
                head.weight.copy_(torch.tensor([self.weight]))
                head.bias.fill_(self.bias)
            self._head = head.to(next(self._net.parameters()).device)
        return self._head

    def logits(self, conversations: Sequence[Conversation]) -> Any:
        """The head's logits (a torch tensor, with grad when the network is in training mode)."""
        import torch

        self._ensure()
        tok = self._tok
        side = tok.padding_side, tok.truncation_side
        try:
            tok.padding_side, tok.truncation_side = "right", "left"  # the last prompt token is the one read
            enc = tok([self._render(c) for c in conversations], return_tensors="pt", padding=True,
                      add_special_tokens=False, truncation=True, max_length=2048)
        finally:
            tok.padding_side, tok.truncation_side = side
        device = next(self._net.parameters()).device
        enc = enc.to(device)
        h = self._net.get_base_model().model(input_ids=enc.input_ids, attention_mask=enc.attention_mask).last_hidden_state
        last = enc.attention_mask.sum(dim=1) - 1
        return self._head_module()(h[torch.arange(len(conversations), device=device), last].float()).squeeze(-1)

    def mismatch(self, model: ChatModel, *, base: bool = False) -> str | None:
        """Why this probe cannot guard ``model``, or None: it runs its own adapted copy of the base model, so
        only the base model must match (any adapter on it is fine)."""
        if self.model == model.spec:
            return None
        return f"the tuned probe was fitted on {self.model}, but the guarded model is {model.spec}; fit one on this model"

    def score(self, model: ChatModel | None, conversations: Sequence[Conversation], *, batch_size: int = 16,
              base: bool = False) -> list[float]:
        """p(harmful) of each conversation (``model`` and ``base`` are accepted for the probe interface: the
        tuned probe always reads its own adapted copy of the base model)."""
        import torch

        if not conversations:
            return []
        self._ensure()
        self._net.eval()
        out = [0.0] * len(conversations)
        with torch.inference_mode():
            for idx in length_batches([len(self._render(c)) for c in conversations], batch_size):
                for i, p in zip(idx, torch.sigmoid(self.logits([conversations[i] for i in idx])).tolist()):
                    out[i] = float(p)
        return out

    def save(self, path: str | Path) -> Path:
        """``path/probe.json`` and the LoRA weights in ``path/adapter`` (written to a temporary directory
        first, so an interrupted save leaves no half-written probe)."""
        import shutil

        if self._net is None:
            raise SpecError("tuned probe: nothing to save (fit one first)")
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self._net.save_pretrained(str(tmp / "adapter"))
        meta = {k: getattr(self, k) for k in ("model", "layer", "weight", "bias", "threshold", "route_threshold",
                                                  "rank", "metrics", "target")}
        atomic_write_text(tmp / "probe.json", json.dumps({"format": TUNED_FORMAT, **meta}, indent=1))
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
        self.path = str(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> TunedProbe:
        path = Path(path)
        meta = path / "probe.json"
        if not meta.is_file() or not (path / "adapter").is_dir():
            raise SpecError(f"{path}: not a tuned probe directory (expected probe.json and adapter/ in it; "
                            "fit one with: safethink probe fit --tune ...)")
        probe = read_probe_json(cls, meta, TUNED_FORMAT, "tuned probe", "tuned probe file", path=str(path))
        if not probe.weight or probe.layer < 1:
            raise SpecError(f"{meta}: the head needs weights and a layer >= 1")
        return probe


def _truncate(net: Any, layer: int) -> None:
    """Keep the first ``layer`` decoder blocks of a causal LM (the read-out is the final-normed output of
    block ``layer``)."""
    inner = getattr(net, "model", None)
    blocks = getattr(inner, "layers", None)
    if blocks is None:
        raise SpecError(f"tuned probe: cannot find the decoder blocks of {type(net).__name__} (expected .model.layers)")
    if not 1 <= layer <= len(blocks):
        raise SpecError(f"tuned probe: layer {layer} is out of range; the model has blocks 1..{len(blocks)}")
    inner.layers = blocks[:layer]
    net.config.num_hidden_layers = layer
    if getattr(net.config, "layer_types", None):
        net.config.layer_types = net.config.layer_types[:layer]


def fit_tuned_probe(model: ChatModel, harmful: Sequence[Conversation], benign: Sequence[Conversation], *,
                    groups: Sequence[str] | None = None, layer: int | None = None, rank: int = 8, lr: float = 5e-4,
                    epochs: float = 2.0, batch_size: int = 8, val_fraction: float = 0.15, max_fpr: float = 0.05,
                    max_fnr: float = 0.05, seed: int = 0, negative_kinds: Sequence[str | None] | None = None,
                    max_negatives_fpr: float = 0.02, progress: ProgressFn | None = None) -> TunedProbe:
    """Fine-tune a :class:`TunedProbe` on ``harmful`` (label 1) and ``benign`` (label 0) conversations.

    ``model`` is the base model (no adapter); its network is copied, never changed. ``layer`` defaults to
    two thirds of the depth. ``val_fraction`` of the groups (``groups``: one per conversation, harmful then
    benign) are kept out of training; on them the threshold is set so that at most ``max_fpr`` of benign
    forms are refused, and the route threshold so that at most ``max_fnr`` of harmful forms fall below it.
    ``negative_kinds`` marks realistic benign negatives as :func:`~safethink.probes.fit_probe_on_states` does: the
    threshold also refuses at most ``max_negatives_fpr`` of those in the validation groups.
    ``progress(k)`` is called after every optimiser step."""
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model
    from sklearn.metrics import roc_auc_score

    if getattr(model, "adapter", None):
        raise SpecError("tuned probe: fit it on the base model (load it without an adapter); it guards any "
                        "adapter on that base")
    if not harmful or not benign:
        raise SpecError("fitting a probe needs both harmful and benign requests")
    if not 0 < val_fraction < 1:
        raise SpecError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if not 0 <= max_negatives_fpr < 1:
        raise SpecError(f"max_negatives_fpr must be in [0, 1), got {max_negatives_fpr}")
    if epochs <= 0 or batch_size < 1 or rank < 1:
        raise SpecError("epochs, batch_size and rank must be positive")
    convs = [*harmful, *benign]
    labels = [1] * len(harmful) + [0] * len(benign)
    g = list(groups) if groups is not None else [str(i) for i in range(len(convs))]
    if len(g) != len(convs):
        raise SpecError(f"{len(convs)} conversations and {len(g)} groups: expected one group per conversation")
    kinds = list(negative_kinds) if negative_kinds is not None else [None] * len(convs)
    if len(kinds) != len(convs) or any(k is not None for k in kinds[:len(harmful)]):
        raise SpecError("negative_kinds: expected one per conversation, set on benign conversations only")
    # Validation groups, drawn separately from groups with a harmful form and benign-only groups, so both
    # classes are in it.
    rng = random.Random(seed)
    with_h = sorted({x for x, y in zip(g, labels) if y})
    only_b = sorted({x for x in g} - set(with_h))
    rng.shuffle(with_h)
    rng.shuffle(only_b)
    val = set(with_h[:max(1, round(len(with_h) * val_fraction))]) | set(only_b[:round(len(only_b) * val_fraction)])
    tr = [i for i, x in enumerate(g) if x not in val]
    va = [i for i, x in enumerate(g) if x in val]
    vy = np.array([labels[i] for i in va])
    if vy.sum() < 1 or (1 - vy).sum() < 1 or len({labels[i] for i in tr}) < 2:
        raise SpecError("fitting a tuned probe needs harmful and benign requests both in training and in the "
                        f"validation share ({len(set(g))} groups; raise val_fraction or give more requests)")

    net, tok = model_parts(model)
    net = copy.deepcopy(net)
    n_blocks = len(net.model.layers)
    layer = layer if layer is not None else max(1, round(2 * n_blocks / 3))
    _truncate(net, layer)
    torch.manual_seed(seed)
    peft_net = get_peft_model(net, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.05,
                                              target_modules="all-linear"))
    head = torch.nn.Linear(net.config.hidden_size, 1).to(next(net.parameters()).device)
    probe = TunedProbe(model=model.spec, layer=layer, weight=[], bias=0.0, threshold=1.0, rank=rank, _net=peft_net,
                       _tok=tok, _render=model.render, _head=head)
    params = [p for p in peft_net.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    steps = max(1, int(np.ceil(len(tr) / batch_size * epochs)))
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, 1 - s / steps))
    y = torch.tensor(labels, dtype=torch.float32)
    n_pos = sum(labels[i] for i in tr)
    pos_weight = torch.tensor((len(tr) - n_pos) / n_pos)
    order: list[int] = []
    t0 = time.perf_counter()
    peft_net.train()
    for _ in range(steps):
        if len(order) < batch_size:
            more = tr[:]
            rng.shuffle(more)
            order += more
        batch, order = order[:batch_size], order[batch_size:]
        z = probe.logits([convs[i] for i in batch])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y[batch].to(z.device), pos_weight=pos_weight)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        if progress:
            progress(1)
    seconds = time.perf_counter() - t0
    probe.weight = head.weight[0].detach().cpu().tolist()
    probe.bias = float(head.bias[0].detach())
    vs = np.array(probe.score(None, [convs[i] for i in va]))
    threshold, negatives = threshold_with_negatives(vs, vy, [kinds[i] for i in va], max_fpr=max_fpr,
                                                    max_negatives_fpr=max_negatives_fpr,
                                                    held_out="validation groups kept out of training")
    route = min(route_at_fnr(vs[vy == 1].tolist(), max_fnr), threshold)
    probe.threshold, probe.route_threshold = threshold, route
    probe.metrics = {
        "auc": float(roc_auc_score(vy, vs)), "validation_forms": len(va), "validation_groups": len(val),
        "oof_harmful_flagged": float((vs[vy == 1] >= threshold).mean()),
        "oof_benign_flagged": float((vs[vy == 0] >= threshold).mean()),
        "oof_harmful_routed": float((vs[vy == 1] < route).mean()),
        "oof_benign_routed": float((vs[vy == 0] < route).mean()),
        "n_harmful": len(harmful), "n_benign": len(benign), "n_groups": len(set(g)), "max_fpr": max_fpr,
        "max_fnr": max_fnr, "steps": steps, "epochs": epochs, "lr": lr, "batch_size": batch_size,
        "train_seconds": seconds, "final_loss": float(loss.detach()),
        **({"negatives": negatives} if negatives else {}),
    }
    return probe
