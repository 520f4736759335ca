"""Judges: read a (prompt, response) pair and say what the answer is and how harmful its compliance
was (``Verdict``: outcome complied / partial / refused / no_answer, refused, score 0-1, explanation,
judge spec). :func:`judge_answers` is how answers are judged: it applies the one no-answer rule (an
empty answer, or one that only repeats the prompt, is neither compliance nor refusal).

Registered (build with ``JUDGES.create(name, **args)`` or ``load_judge("name?k=v")``):

- ``keyword-gcg``, ``keyword-jbb``, ``keyword-xstest``: the published refusal phrase lists;
- ``refusal-classifier``: the offline learned classifier (MiniLM embeddings + linear head);
- ``default``: the most accurate offline judge (see docs/judges.md for the measured agreement);
- ``harmbench``, ``llama-guard``, ``strongreject``: LLM-as-judge rubrics, ``model=<model spec>``.
"""

from ._base import JUDGES, OUTCOMES, Judge, JudgeInput, Measure, Outcome, Verdict, judge_measures
from ._classifier import RefusalClassifierJudge
from ._default import DefaultJudge
from ._keyword import GCGKeywordJudge, JBBKeywordJudge, KeywordJudge, XSTestKeywordJudge
from ._harm import HarmBenchJudge, LlamaGuardJudge, StrongRejectJudge, strongreject_score
from ._llm import LLMJudge
from ._load import load_judge
from ._no_answer import find_no_answer, judge_answers
from ._spec import format_judge_spec, parse_judge_args, parse_judge_spec
from ._validation import judge_validation

# The public surface. Also importable from here, for safethink's own modules and tests: the concrete judge
# classes (build them by name through JUDGES or load_judge), format_judge_spec, parse_judge_args,
# parse_judge_spec, strongreject_score.
__all__ = [
    "JUDGES",
    "OUTCOMES",
    "Judge",
    "JudgeInput",
    "KeywordJudge",
    "LLMJudge",
    "Measure",
    "Outcome",
    "Verdict",
    "find_no_answer",
    "judge_answers",
    "judge_measures",
    "judge_validation",
    "load_judge",
]
