"""Fitting a linear probe: grouped cross-validation picks the layers (an ensemble of the best few, their
logits averaged), and the held-out scores set the threshold and the route threshold.

A request's attacked forms (and its twin, when a group is given) never straddle train and test folds, so the
cross-validated rates are rates on requests the probe has not seen.

    probe = fit_linear_probe(model, harmful_convs, benign_convs, groups=...)
    probe.save("probe.json")
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .._numeric import fit_logistic
from ..errors import SpecError
from ..models import ChatModel, Conversation, ProgressFn
from ._base import Pool
from ._linear import RequestProbe
from ._states import prompt_states


def threshold_at_fpr(benign_scores: Sequence[float], max_fpr: float) -> float:
    """The smallest threshold at which at most ``max_fpr`` of the benign scores are ``>=`` it."""
    s = sorted(benign_scores, reverse=True)
    allowed = math.floor(max_fpr * len(s) + 1e-9)  # this many benign requests may be refused
    if allowed >= len(s):
        return 0.0
    # strictly above the (allowed+1)-th highest benign score
    return float(math.nextafter(s[allowed], math.inf))


def route_at_fnr(harmful_scores: Sequence[float], max_fnr: float) -> float:
    """The highest cut with at most ``max_fnr`` of the harmful scores strictly below it."""
    s = sorted(harmful_scores)
    allowed = math.floor(max_fnr * len(s) + 1e-9)  # this many harmful requests may fall below
    return 1.0 if allowed >= len(s) else float(s[allowed])


def fit_linear_probe(model: ChatModel, harmful: Sequence[Conversation], benign: Sequence[Conversation], *,
                     groups: Sequence[str] | None = None, layers: Sequence[int] | None = None, pool: Pool = "last",
                     batch_size: int = 16, progress: ProgressFn | None = None, **options: Any) -> RequestProbe:
    """Fit a linear probe on ``harmful`` (label 1) and ``benign`` (label 0) conversations under ``model``
    (:func:`~safethink.probes.fit_probe` builds those conversations from prompt sources and attacks).

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
    """:func:`fit_linear_probe` on states already computed (``prompt_states`` of the labelled conversations,
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
            clf = fit_logistic(xt, y[tr], c=c, max_iter=2000)
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
    route = min(route_at_fnr(oof[y == 1].tolist(), max_fnr), threshold)
    mus, sds, ws, bs = [], [], [], []
    for L in chosen:  # the averaged regressions as one linear model on the concatenated states
        xs, mu, sd = standardise(states[:, layer_ids.index(L)].astype(np.float64))
        clf = fit_logistic(xs, y, c=c, max_iter=2000)
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
    base = threshold_at_fpr(s[y == 0].tolist(), max_fpr)
    marked = np.array([k is not None for k in kinds], dtype=bool)
    if not marked.any():
        return base, {}
    own = threshold_at_fpr(s[marked].tolist(), max_negatives_fpr)
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
