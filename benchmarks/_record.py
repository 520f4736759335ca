"""One way for every benchmark to keep its numbers: a results JSON with where, when and how they were measured,
and the same rows printed as a markdown table, ready for BENCHMARKS.md.

    from _record import pct, record

    record("guard", rows, columns={"guard": "guard", "tokens/s": "tokens_per_s", "x none": lambda r: f"{r['vs_none']:.3f}"},
           title="pivot guard overhead", settings={"prompts": 48}, summary={"slowdown": 0.019})

Only ``_machine`` and ``_record`` are imported by the benchmark scripts; a script runs as
``python benchmarks/<name>.py``, which puts this folder on ``sys.path``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from _machine import machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ENV_KEPT = ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "SAFETHINK_DATA_DIR")
"""Environment variables that change what a benchmark measures: written in front of the recorded command."""
_ENV_AT_START = {k: os.environ[k] for k in ENV_KEPT if k in os.environ}
"""As the command was typed: read when a script imports this module, before it sets any of them itself."""

Column = str | Callable[[Mapping[str, Any]], Any]


def pct(x: float | None, digits: int = 0) -> str:
    """``0.734 -> '73%'``; ``None`` and NaN -> ``'-'``."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{100 * x:.{digits}f}%"


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that ran this process, as a reader would type it from the repository root:
    ``OMP_NUM_THREADS=1 python benchmarks/guard.py --prompts 16``."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]) if argv else Path("python")
    try:
        script = script.resolve().relative_to(ROOT)
    except ValueError:
        pass
    env = [f"{k}={shlex.quote(v)}" for k, v in _ENV_AT_START.items()]
    return " ".join([*env, shlex.join(["python", str(script), *argv[1:]])])


def git_commit() -> dict[str, Any]:
    """The checkout's commit, and whether tracked files differ from it (``None`` outside a git checkout)."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--short=12", "HEAD")
    changes = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if changes is None else bool(changes)}


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        text = "-"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, float):
        text = f"{value:.4g}"
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Mapping[str, Column] | None = None) -> str:
    """``rows`` as a markdown table. ``columns`` maps each header to a row key or to a function of the row
    (default: every key of the first row whose value is not a dict or list). Numbers are right-aligned."""
    if columns is None:
        first = rows[0] if rows else {}
        columns = {k: k for k, v in first.items() if not isinstance(v, (dict, list, tuple))}
    if not columns:
        raise ValueError("markdown_table: no columns to print")
    cells = [[_cell(get(r) if callable(get) else r.get(get)) for get in columns.values()] for r in rows]

    def numeric(i: int) -> bool:
        vals = [c[i].split(" ")[0].rstrip("%x").replace(",", "") for c in cells if c[i] != "-"]
        return bool(vals) and all(_is_number(v) for v in vals)

    align = ["---:" if numeric(i) else "---" for i in range(len(columns))]
    lines = ["| " + " | ".join(_cell(h) for h in columns) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    return "\n".join(lines)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def record(name: str, rows: Sequence[Mapping[str, Any]], *, columns: Mapping[str, Column] | None = None,
           title: str | None = None, out: str | Path | None = None, argv: Sequence[str] | None = None,
           machine_extra: Mapping[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """Write a benchmark's results and print them as a markdown table; returns the record written.

    ``name``: the benchmark (``guard``, ``defence`` ...); the JSON goes to ``out``, by default
    ``benchmarks/results/<name>.json``. ``rows``: the table, one dict per row, stored in full under ``rows``
    (nested values included) and printed through ``columns`` (see :func:`markdown_table`). ``fields``: anything
    else worth keeping (``settings=``, ``summary=``, timings), stored at the top level next to ``benchmark``,
    ``date``, ``command`` (from ``argv``, default ``sys.argv``), ``git`` (commit, dirty) and ``machine``
    (:func:`_machine.machine`, plus ``machine_extra`` such as CPU flags)."""
    reserved = {"benchmark", "date", "command", "git", "machine", "rows"} & set(fields)
    if reserved:
        raise ValueError(f"record: {sorted(reserved)} are written by record itself")
    dest = Path(out) if out is not None else RESULTS / f"{name}.json"
    result: dict[str, Any] = {
        "benchmark": name, "date": dt.date.today().isoformat(), "command": command_line(argv),
        "git": git_commit(), "machine": {**machine(), **(machine_extra or {})}, **fields,
        "rows": [dict(r) for r in rows],
    }
    table = markdown_table(rows, columns) if rows else "(no rows)"
    print(f"\n{title}\n" if title else "", table, sep="", flush=True)
    from safethink.io import atomic_write_text

    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(dest, json.dumps(result, indent=1, default=str) + "\n")
    print(f"wrote {dest}", file=sys.stderr)
    return result
