"""``safethink run PRESET|FILE.yaml``: a whole pipeline (split, data, train, probes, eval, report) from a shipped
preset or a YAML file, with a before/after table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich import box
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ._common import console, err_console, quiet_hf


def _pct(x: float) -> str:
    return "-" if x != x else f"{100 * x:.0f}%"


def run_and_print(pc: Any, out: Path, title: str) -> None:
    """Run the pipeline config ``pc`` into ``out`` with progress bars, then print the table, the report's path
    and each stage's wall time."""
    from ..models import parse_model_spec
    from ..pipeline import run_pipeline

    parse_model_spec(pc.model)
    quiet_hf()
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
        (rows, attacks, sets), files = run_pipeline(pc, out, progress)
    print_summary(summary_table(rows, attacks, sets, title))
    console.print(f"report: {files.html}  ({time.perf_counter() - t0:.0f} s)")
    console.print(_stage_times(out / "timings.json"), soft_wrap=True)  # one line in a log, however long


def summary_table(rows: list[Any], attacks: list[str], sets: list[str], title: str) -> Table:
    """One column per variant, one row per metric under a heading per group. The offline judge detects refusals,
    so the harmful-prompt rate is a non-refusal rate (an ASR only under a harm judge)."""
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", show_edge=False, pad_edge=False,
                  collapse_padding=True)
    table.add_column("metric", no_wrap=True)
    for r in rows:
        table.add_column(r.variant, justify="right", overflow="fold")
    table.add_row("[bold]harmful: not refused[/]", *[""] * len(rows))
    for a in attacks:
        table.add_row(f"  {a}", *[_pct(r.asr.get(a, float("nan"))) for r in rows])
    table.add_row("  all attacks", *[_pct(r.asr_all) for r in rows])
    table.add_row("  95% CI", *[f"{100 * r.asr_ci[0]:.0f}-{_pct(r.asr_ci[1])}" for r in rows])
    table.add_row("[bold]benign: refused[/]", *[""] * len(rows))
    for s_ in sets:
        table.add_row(f"  {s_}", *[_pct(r.over_refusal.get(s_, float("nan"))) for r in rows])
    table.add_row("[bold]benign answered[/]", *[_pct(r.benign_answer) for r in rows])
    return table


def print_summary(table: Table) -> None:
    """Print the table whole: on a terminal at its width (headers wrap, cells never do), and into a file or
    pipe as wide as the table needs, so a log keeps one line per metric."""
    if console.is_terminal:
        console.print(table)
        return
    from rich.console import Console

    width = console.measure(table, options=console.options.update(width=10_000)).maximum
    Console(file=console.file, width=max(console.width, width), no_color=console.no_color).print(table)


def _stage_times(path: Path) -> str:
    """One line of wall time per stage, from the run's ``timings.json``."""
    import json

    t = json.loads(path.read_text(encoding="utf-8"))
    parts = ", ".join(f"{k} {v:.0f} s" for k, v in t["stages"].items())
    m = t["machine"]
    workers = m.get("workers", 1)
    side = f", {workers} workers of {m['threads_per_worker']} thread(s) side by side" if workers > 1 else ""
    return f"stages: {parts} ({m['cpus']} CPUs, {m['auto_dtype']} on {m['device']}{side}; {path})"


def run(
    config: Annotated[str, typer.Argument(metavar="PRESET|FILE.yaml",
                                          help="A shipped pipeline preset (safethink presets list) or a YAML file.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output directory (stages are cached here and "
                                                "resumed; default runs/<config name>).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Change one setting: key.path=value, the value "
                                                      "read as YAML (repeatable), e.g. --set split.train_harmful=20 "
                                                      "--set probes.intent.enabled=true.")] = None,
    show: Annotated[bool, typer.Option("--show", help="Print the resolved config as YAML and run nothing.")] = False,
) -> None:
    """Run a pipeline: split the built-in seed set, build training data, train the arms, fit the probes,
    evaluate every variant under attack, print the before/after table and write the HTML report."""
    from ..pipeline import load_pipeline

    pc = load_pipeline(config, set_ or [])
    if show:
        import yaml

        typer.echo(yaml.safe_dump(pc.model_dump(mode="json"), sort_keys=False, width=120), nl=False)
        return
    out = out or Path("runs") / pc.name
    run_and_print(pc, out, f"safethink run {pc.name} ({pc.model}, {'fast' if pc.fast else 'full'})")


def register(app: typer.Typer) -> None:
    app.command("run")(run)
