"""Judges: read a (prompt, response) pair and say whether the model refused and how harmful its
compliance was (``Verdict``: refused, score 0-1, explanation, judge spec).

Registered (build with ``JUDGES.create(name, **args)`` or ``load_judge("name?k=v")``):

- ``keyword-gcg``, ``keyword-jbb``, ``keyword-xstest``: the published refusal phrase lists;
- ``refusal-classifier``: the offline learned classifier (MiniLM embeddings + linear head);
- ``default``: the most accurate offline judge (see docs/judges.md for the measured agreement);
- ``harmbench``, ``llama-guard``, ``strongreject``: LLM-as-judge rubrics, ``model=<model spec>``.
"""

from ._base import JUDGES, Judge, JudgeInput, Verdict
from ._classifier import RefusalClassifierJudge
from ._default import DefaultJudge
from ._keyword import GCGKeywordJudge, JBBKeywordJudge, KeywordJudge, XSTestKeywordJudge
from ._llm import HarmBenchJudge, LlamaGuardJudge, LLMJudge, StrongRejectJudge, strongreject_score
from ._load import load_judge
from ._spec import format_judge_spec, parse_judge_args, parse_judge_spec

__all__ = [
    "JUDGES",
    "DefaultJudge",
    "GCGKeywordJudge",
    "HarmBenchJudge",
    "JBBKeywordJudge",
    "Judge",
    "JudgeInput",
    "KeywordJudge",
    "LLMJudge",
    "LlamaGuardJudge",
    "RefusalClassifierJudge",
    "StrongRejectJudge",
    "Verdict",
    "XSTestKeywordJudge",
    "format_judge_spec",
    "load_judge",
    "parse_judge_args",
    "parse_judge_spec",
    "strongreject_score",
]
