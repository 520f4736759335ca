"""Evaluation: run a matrix of models x defences x attacks x datasets, store every attempt in
SQLite, compute metrics (outcome counts, attack success or non-refusal rate with Wilson intervals,
over-refusal, StrongREJECT) and render reports.

>>> from safethink.eval import load_spec, run_eval, render_report
>>> result = run_eval(load_spec("examples/eval_jbb.yaml"))      # doctest: +SKIP
>>> render_report(result.out_dir, export=["jsonl"])              # doctest: +SKIP
"""

from ._metrics import (
    METRIC_NAMES, Metrics, OutcomeCounts, Rate, compute_metrics, is_jailbroken, is_refused, outcome_of, wilson_interval,
)
from ._report import ReportFiles, export_attempts, load_attempts, render_report
from ._runner import EvalResult, ProgressEvent, run_eval
from ._spec import (
    AttackEntry, DatasetEntry, DefenceEntry, EvalSpec, GenerationEntry, JudgeEntry, ModelEntry, load_spec, parse_spec,
)
from ._store import Attempt, ResultStore, adapter_hash, attempt_key, open_store

# The public surface. Also importable from here, for safethink's own modules and tests: the spec entry models
# (AttackEntry, DatasetEntry, DefenceEntry, GenerationEntry, JudgeEntry, ModelEntry), METRIC_NAMES,
# adapter_hash, attempt_key, is_jailbroken, is_refused, outcome_of.
__all__ = [
    "Attempt",
    "EvalResult",
    "EvalSpec",
    "Metrics",
    "OutcomeCounts",
    "ProgressEvent",
    "Rate",
    "ReportFiles",
    "ResultStore",
    "compute_metrics",
    "export_attempts",
    "load_attempts",
    "load_spec",
    "open_store",
    "parse_spec",
    "render_report",
    "run_eval",
    "wilson_interval",
]
