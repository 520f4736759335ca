"""Warn when a training prompt is (nearly) an evaluation prompt: training on the test set makes
attack-success numbers meaningless, and public sets overlap (JBB reuses AdvBench and HarmBench)."""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import SafethinkError
from ._schema import PromptRecord

log = logging.getLogger(__name__)

EVAL_SOURCES = ("jbb-harmful", "jbb-benign", "xstest", "harmbench", "strongreject")
"""Evaluation sets checked by default, when they can be loaded offline."""


@dataclass(frozen=True)
class NearDuplicate:
    train_id: str
    eval_id: str
    similarity: float
    """Jaccard similarity of word sets (1.0 = same words)."""


def _words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"[a-z0-9]+", text.lower()))


def find_near_duplicates(
    train: Sequence[PromptRecord],
    eval_records: Sequence[PromptRecord],
    *,
    threshold: float = 0.8,
) -> list[NearDuplicate]:
    """Pairs whose word-set Jaccard similarity is at least ``threshold``.

    Word sets catch re-punctuated, re-cased and lightly reworded copies; an inverted index
    keeps it fast (only pairs sharing a rare-ish word are compared).
    """
    index: dict[str, list[int]] = defaultdict(list)
    eval_words = [_words(r.prompt) for r in eval_records]
    for j, ws in enumerate(eval_words):
        for w in ws:
            index[w].append(j)
    found: list[NearDuplicate] = []
    for rec in train:
        ws = _words(rec.prompt)
        if not ws:
            continue
        cands: set[int] = set()
        # Two sets with Jaccard >= t share most words; the longest words are the rarest, so
        # looking up only those bounds the work without missing a near copy.
        for w in sorted(ws, key=len, reverse=True)[: max(3, len(ws) // 2)]:
            cands.update(index.get(w, ()))
        best: NearDuplicate | None = None
        for j in cands:
            ev = eval_words[j]
            sim = len(ws & ev) / len(ws | ev)
            if sim >= threshold and (best is None or sim > best.similarity):
                best = NearDuplicate(rec.id, eval_records[j].id, round(sim, 3))
        if best:
            found.append(best)
    return found


def load_eval_prompts(sources: Sequence[str] = EVAL_SOURCES, *, data_dir: str | None = None) -> list[PromptRecord]:
    """Evaluation prompts from every source that is available offline; others are skipped."""
    from ._loaders import load_prompts

    out: list[PromptRecord] = []
    for s in sources:
        try:
            out.extend(load_prompts(s, data_dir=data_dir))
        except SafethinkError as e:
            log.info("near-duplicate check: %s not available (%s)", s, e)
    return out
