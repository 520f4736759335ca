"""How often probes flag each prompt source, measured on the prompts alone (nothing is generated)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..data import load_prompts
from ..errors import SpecError
from ..models import ChatModel, Conversation
from ._linear import RequestProbe
from ._states import prompt_states


def flag_rates(model: ChatModel, probes: Sequence[Any], *, harmful: Sequence[str] = (), benign: Sequence[str] = (),
               attacks: Sequence[str] = ("none",), threshold: float | None = None, limit: int | None = None,
               seed: int = 0, data_dir: str | None = None, batch_size: int = 16) -> list[dict[str, Any]]:
    """The share of each prompt source that each of ``probes`` flags under ``model``, measured before anything
    is generated (a probe acts on the prompt alone), so a whole set takes seconds to minutes. The hidden states
    are computed once for all linear probes.

    Each ``harmful`` source is sent under every one of ``attacks`` (templates drawn with ``seed``, as an
    evaluation with that seed draws them), each ``benign`` source as an evaluation sends it: verbatim, its
    history first. ``threshold`` overrides the probes' own; ``limit`` samples each source. One row per (source,
    attack): ``source``, ``label``, ``attack``, ``n``, and per probe (``probes``, in order) ``flagged``, ``rate``,
    ``threshold`` and, for sources whose records have a ``meta.kind``, ``by_kind`` (``n``, ``flagged``,
    ``rate``)."""
    from ..attacks import ATTACKS  # on use: the attack plugins are slow to import

    for name in attacks:
        if ATTACKS.get(name).needs_target:
            raise SpecError(f"attack {name!r} queries a target model; flag rates are measured on prompt-only attacks")
    for p in probes:
        why = p.mismatch(model)
        if why:
            raise SpecError(why)
    plan: list[tuple[str, str, str, list[Any], list[Any]]] = []
    for label, sources, names in (("harmful", harmful, list(attacks)), ("benign", benign, ["none"])):
        for src in sources:
            recs = load_prompts(src, label=label, limit=limit, seed=seed, data_dir=data_dir)  # type: ignore[arg-type]
            for name in names:
                convs = [ap.messages for ap in ATTACKS.create(name).prepare(recs, seed=seed)]
                plan.append((src, label, name, recs, convs))
    scores = probe_scores(model, probes, [c for *_, convs in plan for c in convs], batch_size=batch_size)
    rows, at = [], 0
    for src, label, name, recs, convs in plan:
        row: dict[str, Any] = {"source": src, "label": label, "attack": name, "n": len(convs), "probes": []}
        for p, ps in zip(probes, scores):
            cut = p.threshold if threshold is None else threshold
            flagged = [s >= cut for s in ps[at:at + len(convs)]]
            by_kind: dict[str, dict[str, Any]] = {}
            for rec, f in zip(recs, flagged):
                if rec.meta.get("kind"):
                    k = by_kind.setdefault(str(rec.meta["kind"]), {"n": 0, "flagged": 0})
                    k["n"], k["flagged"] = k["n"] + 1, k["flagged"] + int(f)
            for k in by_kind.values():
                k["rate"] = k["flagged"] / k["n"]
            row["probes"].append({"flagged": sum(flagged), "rate": sum(flagged) / len(convs), "threshold": cut,
                                  **({"by_kind": dict(sorted(by_kind.items()))} if by_kind else {})})
        at += len(convs)
        rows.append(row)
    return rows


def probe_scores(model: ChatModel, probes: Sequence[Any], conversations: Sequence[Conversation], *,
                  batch_size: int) -> list[list[float]]:
    """Each probe's scores of ``conversations``; linear probes of one pooling share one pass over the model."""
    out: dict[int, list[float]] = {}
    linear = [(i, p) for i, p in enumerate(probes) if isinstance(p, RequestProbe)]
    for pool in sorted({p.pool for _, p in linear}):
        same = [(i, p) for i, p in linear if p.pool == pool]
        layers = sorted({k for _, p in same for k in p.layers})
        states = prompt_states(model, conversations, layers=layers, pool=pool, batch_size=batch_size)
        for i, p in same:
            out[i] = [float(x) for x in p.probabilities(states[:, [layers.index(k) for k in p.layers]])]
    for i, p in enumerate(probes):
        if i not in out:
            out[i] = p.score(model, conversations, batch_size=batch_size)
    return [out[i] for i in range(len(probes))]
