"""The before/after table: one line per metric on an 80-column terminal and in a log file."""

from __future__ import annotations

import io

from rich.console import Console

from safethink.cli import _run
from safethink.pipeline import SummaryRow

VARIANTS = ["base", "base + self-reminder", "SCoT", "R2D", "R2D + pivot guard", "base + wrapper probe"]
ATTACKS = ["none", "prefix-injection", "refusal-suppression", "payload-splitting"]
SETS = ["benign twins", "safe-but-scary", "realistic"]


def _table():
    rows = [SummaryRow(variant=v, asr={a: (i + k) / 16 for k, a in enumerate(ATTACKS)}, asr_all=i / 10,
                       asr_ci=(i / 20, i / 8), over_refusal={s: 0.5 for s in SETS}, benign_answer=0.75)
            for i, v in enumerate(VARIANTS)]
    return _run.summary_table(rows, ATTACKS, SETS, "title")


def _metric_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip().startswith(tuple(ATTACKS + SETS + ["95% CI", "all attacks"]))]


def test_an_80_column_terminal_gets_every_variant_and_one_line_per_metric():
    con = Console(width=80, file=io.StringIO(), force_terminal=True, color_system=None)
    con.print(_table())
    text = con.file.getvalue()
    assert max(len(ln) for ln in text.splitlines()) <= 80
    lines = _metric_lines(text)
    assert len(lines) == len(ATTACKS) + 2 + len(SETS)  # no metric wrapped onto a second line
    assert all(len(ln.split()) >= 1 + len(VARIANTS) for ln in lines)  # a cell for every variant on its line
    assert "wrapper" in text and "self-" in text


def test_a_log_file_gets_the_table_unwrapped(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(_run, "console", Console(file=out, width=80))
    _run.print_summary(_table())
    text = out.getvalue()
    assert all(v in text for v in VARIANTS)  # headers on one line each, not folded
    assert len(_metric_lines(text)) == len(ATTACKS) + 2 + len(SETS)
