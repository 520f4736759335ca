"""``safethink quickstart``: the whole journey on the bundled model, offline, with a before/after table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ._common import console, err_console, quiet_hf, split_list


def _pct(x: float) -> str:
    return "-" if x != x else f"{100 * x:.0f}%"


def quickstart(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory (stages are cached here and resumed).")] = Path("runs/quickstart"),
    fast: Annotated[bool, typer.Option("--fast", help="A few minutes: fewer prompts, attacks and steps.")] = False,
    model: Annotated[str, typer.Option(help="Target model spec.")] = "smollm2-135m",
    seed: Annotated[int, typer.Option()] = 0,
    probe: Annotated[bool, typer.Option("--probe", help="Also fit the probe guard and evaluate R2D behind it, and "
                                        "the probe as a base / R2D router (on 2 CPU cores about 12 more minutes "
                                        "in full mode).")] = False,
    probe_tune: Annotated[bool, typer.Option("--probe-tune", help="As --probe, with a tuned probe (LoRA on the "
                                             "lower blocks and a linear head; about 17 more minutes of training on "
                                             "2 CPU cores in full mode).")] = False,
    probe_wrapper: Annotated[bool, typer.Option("--probe-wrapper/--no-probe-wrapper", help="Fit a wrapper probe "
                                                "(refuses requests that come inside an attack template or encoding) "
                                                "and evaluate the base model behind it, and with --probe the probe "
                                                "router behind it (on 2 CPU cores about 4 more minutes in full "
                                                "mode).")] = True,
    negatives: Annotated[Optional[list[str]], typer.Option(
        help="Benign requests as real users send them, taken by the probes as extra negatives, with their threshold "
             "held to at most 2% of them flagged out of fold (repeatable; default builtin:realistic-train; 'none' "
             "fits without).")] = None,
) -> None:
    """Build SCoT and R2D data from the built-in seed set, train both adapters on the bundled model,
    evaluate base vs defended models under attack, print the before/after table, write the HTML report."""
    from ..models import parse_model_spec
    from ..quickstart import REALISTIC_TRAIN, QuickstartConfig, run_quickstart

    parse_model_spec(model)
    quiet_hf()
    sources = tuple(s for s in (split_list(negatives) or [REALISTIC_TRAIN]) if s != "none")
    cfg = QuickstartConfig.for_mode(out, fast=fast, model=model, seed=seed, probe=probe, probe_tune=probe_tune,
                                    probe_wrapper=probe_wrapper, negatives=sources)
    t0 = time.perf_counter()
    prog = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err_console)
    tasks: dict[str, int] = {}

    def progress(what: str, done: int, total: int) -> None:
        if what not in tasks:
            for t in prog.tasks:  # a new stage began: the earlier ones are over, so stop their clocks
                if not t.finished:
                    prog.update(t.id, total=t.total or 1, completed=t.total or 1)
                    prog.stop_task(t.id)
            tasks[what] = prog.add_task(what, total=total or None)
        prog.update(tasks[what], completed=done, total=total or None)

    with prog:
        (rows, attacks, sets), files = run_quickstart(cfg, progress)
    # One column per variant and one row per metric, so the table fits a terminal.
    table = Table(title=f"safethink quickstart ({model}, held-out prompts, {'fast' if fast else 'full'})")
    table.add_column("metric", style="bold")
    for r in rows:
        table.add_column(r.variant, justify="right")
    for a in attacks:
        table.add_row(f"ASR {a}", *[_pct(r.asr.get(a, float("nan"))) for r in rows])
    table.add_row("ASR all attacks", *[_pct(r.asr_all) for r in rows])
    table.add_row("  95% CI", *[f"{_pct(r.asr_ci[0])}-{_pct(r.asr_ci[1])}" for r in rows])
    for s_ in sets:
        table.add_row(f"refused: {s_}", *[_pct(r.over_refusal.get(s_, float("nan"))) for r in rows])
    table.add_row("benign answered", *[_pct(r.benign_answer) for r in rows])
    console.print(table)
    console.print(f"report: {files.html}  ({time.perf_counter() - t0:.0f} s)")
    console.print(_stage_times(cfg.out / "timings.json"))


def _stage_times(path: Path) -> str:
    """One line of wall time per stage, from the run's ``timings.json``."""
    import json

    t = json.loads(path.read_text(encoding="utf-8"))
    parts = ", ".join(f"{k} {v:.0f} s" for k, v in t["stages"].items())
    m = t["machine"]
    return f"stages: {parts} ({m['cpus']} CPUs, {m['auto_dtype']} on {m['device']}; {path})"


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart)
