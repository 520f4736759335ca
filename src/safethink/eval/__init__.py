"""Evaluation: run a matrix of models x defences x attacks x datasets, store every attempt in
SQLite, compute metrics (ASR with Wilson intervals, over-refusal, StrongREJECT) and render reports.

>>> from safethink.eval import load_spec, run_eval, render_report
>>> result = run_eval(load_spec("examples/eval_jbb.yaml"))      # doctest: +SKIP
>>> render_report(result.out_dir, export=["jsonl"])              # doctest: +SKIP
"""

from ._metrics import Metrics, Rate, compute_metrics, is_jailbroken, is_refused, wilson_interval
from ._report import ReportFiles, export_attempts, load_attempts, render_report
from ._runner import EvalResult, ProgressEvent, run_eval
from ._spec import (
    AttackEntry, DatasetEntry, DefenceEntry, EvalSpec, GenerationEntry, JudgeEntry, ModelEntry, load_spec, parse_spec,
)
from ._store import Attempt, ResultStore, adapter_hash, attempt_key, open_store

__all__ = [
    "AttackEntry",
    "Attempt",
    "DatasetEntry",
    "DefenceEntry",
    "EvalResult",
    "EvalSpec",
    "GenerationEntry",
    "JudgeEntry",
    "Metrics",
    "ModelEntry",
    "ProgressEvent",
    "Rate",
    "ReportFiles",
    "ResultStore",
    "adapter_hash",
    "attempt_key",
    "compute_metrics",
    "export_attempts",
    "is_jailbroken",
    "is_refused",
    "load_attempts",
    "load_spec",
    "open_store",
    "parse_spec",
    "render_report",
    "run_eval",
    "wilson_interval",
]
