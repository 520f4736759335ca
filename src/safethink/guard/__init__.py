"""Guards: defences wrapped around generation, all behind one interface (:class:`Guard`).

Build one by registry name, ``GUARDS.create("r2d-pivot", on_unsafe="rollback")``; names:
``none``, ``scot``, ``scot-verdict`` (SCoT verdicts read from their log-odds), ``r2d``,
``r2d-pivot`` (decode-time pivot guard), ``probe`` (a probe from :mod:`safethink.probes` reads the prompt
before anything is generated; chain two, ``then="probe"``, to put a wrapper probe in front of an intent
probe) and the published baselines
``self-reminder``, ``goal-priority``, ``icd``, ``intention-analysis``, ``r2d-prompt``,
``scot-prompt`` (= ``scot-p3``), ``scot-p1``, ``scot-p2`` (SCoT's prompt-only levels), ``smoothllm``,
``perplexity``, ``erase-check`` (suffix, insertion, infusion), ``paraphrase``.

What a guard stops never reaches the user: ``GuardedOutput.flagged`` keeps it for logs,
:func:`leaked` tells whether a returned text shows any of it, and :func:`seal` replaces an answer
that does with a refusal (the server applies it to every answer before sending).
"""

from ._base import GUARDS, Guard, GuardedOutput, ReasoningMode
from ._core import BLOCKING_ACTIONS, GuardBase, looks_like_refusal, seal
from ._filters import EraseAndCheck, PerplexityFilter, SmoothLLM, erase_check_cost, erased_subsequences, log_perplexities, perturb
from ._leak import leaked
from ._parse import NoGuard, R2DGuard, SCoTGuard
from ._pivot import PivotGuard, PivotWatcher, pivot_token_ids
from ._probe import ProbeGuard
from ._verdict import SCoTVerdictGuard, verdict_scores
from ._prompting import (
    GoalPriority, InContextDefense, IntentionAnalysis, Paraphrase, R2DPrompt, SCoTCheckPrompt, SCoTFormatPrompt,
    SCoTPolicyPrompt, SCoTPrompt, SelfReminder,
)


def create_guard(name: str, **options) -> Guard:
    """``GUARDS.create`` (records how the guard was built in ``guard.build_spec``)."""
    return GUARDS.create(name, **options)


__all__ = [
    "BLOCKING_ACTIONS",
    "GUARDS",
    "EraseAndCheck",
    "GoalPriority",
    "Guard",
    "GuardBase",
    "GuardedOutput",
    "InContextDefense",
    "IntentionAnalysis",
    "NoGuard",
    "Paraphrase",
    "PerplexityFilter",
    "PivotGuard",
    "PivotWatcher",
    "ProbeGuard",
    "R2DGuard",
    "R2DPrompt",
    "ReasoningMode",
    "SCoTCheckPrompt",
    "SCoTFormatPrompt",
    "SCoTGuard",
    "SCoTPolicyPrompt",
    "SCoTPrompt",
    "SCoTVerdictGuard",
    "SelfReminder",
    "SmoothLLM",
    "create_guard",
    "erase_check_cost",
    "erased_subsequences",
    "leaked",
    "log_perplexities",
    "looks_like_refusal",
    "perturb",
    "seal",
    "verdict_scores",
    "pivot_token_ids",
]
