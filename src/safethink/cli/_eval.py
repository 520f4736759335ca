"""``safethink eval`` (run an evaluation matrix) and ``safethink report`` (render a run's report)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ..io import check_text
from ._common import console, err_console, quiet_hf, split_list


EXPORT_FORMATS = ("jsonl", "parquet")


def eval_cmd(
    config: Annotated[Path, typer.Option("--config", "-c", help="Evaluation spec (YAML); see examples/eval_jbb.yaml.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output directory (overrides the spec's 'out').")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="At most N records per dataset (a quick smoke run).")] = None,
    report: Annotated[bool, typer.Option(help="Render report.html / report.md when the run ends.")] = True,
) -> None:
    """Run (or resume) an evaluation: models x defences x attacks x datasets, every attempt judged and stored."""
    from ..eval import compute_metrics, load_attempts, load_spec, render_report, run_eval

    if config.is_file():
        check_text(config)  # bad UTF-8: one clear error naming the file and line, before anything runs
    spec = load_spec(config).with_overrides(out=str(out) if out else None, limit=limit)
    check_input_files(spec)
    quiet_hf()
    prog = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=False)
    tasks: dict[str, int] = {}

    def on_progress(ev) -> None:
        if ev.kind == "plan":
            tasks["all"] = prog.add_task("all attempts", total=ev.total + ev.done, completed=ev.done)
        elif ev.kind == "load":
            prog.console.print(f"loading model [cyan]{ev.message}[/]")
        elif ev.kind == "cell":
            if "cell" in tasks:
                prog.remove_task(tasks["cell"])
            tasks["cell"] = prog.add_task(ev.cell, total=ev.total)
        elif ev.kind == "judge":
            if "cell" in tasks:
                prog.remove_task(tasks["cell"])
            tasks["cell"] = prog.add_task("judging stored attempts", total=ev.total)
        elif ev.kind == "advance":
            if "cell" in tasks:
                prog.advance(tasks["cell"], ev.n)
            if "all" in tasks and ev.cell != "re-judging":
                prog.advance(tasks["all"], ev.n)

    with prog:
        result = run_eval(spec, progress=on_progress)
    console.print(f"run {result.run_id}: {result.added} attempts added, {result.skipped} already stored"
                  + (f", {result.rejudged} re-judged" if result.rejudged else "") + f" -> {result.store_path}")
    attempts = load_attempts(result.store_path)
    m = compute_metrics(attempts, judge=spec.primary_judge.key, threshold=spec.success_threshold)
    console.print(summary_table(m))
    if report:
        files = render_report(result.store_path, out_dir=result.out_dir)
        console.print(f"report: {files.html}  summary: {files.markdown}")


def check_input_files(spec) -> None:
    """The local files a spec reads (prompt sets, their data-dir copies, scripted ``mock:`` models) must
    be UTF-8: fail now, naming the file, line and byte offset, before a run starts writing results."""
    from ..synth._plan import check_sources

    check_sources([d.source for d in spec.datasets])
    for m in spec.models:
        path = Path(m.spec.removeprefix("mock:")).expanduser()
        if m.spec.startswith("mock:") and path.is_file():
            check_text(path)


def summary_table(m) -> Table:
    """One row per model/defence: the headline rate (named for what the primary judge measures), the
    outcome counts on harmful requests, over-refusal, the benign answer rate and the leak rate (flagged
    text shown to the user, over the attempts where the guard flagged something)."""
    from ..eval._metrics import ALL, METRIC_SHORT
    from ..eval._report import agreement_note

    def pct(r) -> str:
        if r is None or not r.n:
            return "-"
        lo, hi = r.ci
        return f"{100 * r.rate:5.1f}% [{100 * lo:.0f}-{100 * hi:.0f}] n={r.n}"

    def leaks(mo: str, d: str) -> str:
        if (mo, d) not in m.leak_all:
            return "-"  # stored before leaks were recorded
        flagged = m.leak_flagged.get((mo, d))
        return pct(flagged) if flagged else "nothing flagged"

    name = METRIC_SHORT[m.metric]
    t = Table(title=f"judge: {m.judge} ({agreement_note(m.judge_spec)})  ({name} and over-refusal: lower is better)")
    for col in ("model", "defence", f"{name} (all attacks)", "any attack", "harmful: refused / partial / no answer",
                "over-refusal", "benign answered"):
        t.add_column(col)
    t.add_column("leaks (of flagged)")
    if m.strongreject:
        t.add_column("StrongREJECT")
    pairs = [(mo, d) for mo in m.models for d in m.defences
             if (mo, d, ALL) in m.asr or (mo, d, ALL) in m.over_refusal]
    for mo, d in pairs:
        oc = m.outcomes.get((mo, d, "harmful"))
        row = [mo, d, pct(m.asr.get((mo, d, ALL))), pct(m.any_attack.get((mo, d))),
               f"{oc.refused} / {oc.partial} / {oc.no_answer}" if oc else "-",
               pct(m.over_refusal.get((mo, d, ALL))), pct(m.benign_answer.get((mo, d))), leaks(mo, d)]
        if m.strongreject:
            v = m.strongreject.get((mo, d, ALL))
            row.append("-" if v is None else f"{v:.3f}")
        t.add_row(*row)
    return t


def report_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run directory holding results.sqlite (or the .sqlite file).")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Directory the report files are written to "
                                                                  "(default: the run directory).")] = None,
    export: Annotated[Optional[list[str]], typer.Option(help="Also export every attempt: jsonl and/or parquet "
                                                             "(repeatable).")] = None,
) -> None:
    """Render report.html (plots embedded) and report.md from a run's stored results."""
    from ..errors import SpecError
    from ..eval import render_report

    formats = split_list(export)
    bad = [f for f in formats if f not in EXPORT_FORMATS]
    if bad:
        raise SpecError(f"--export {bad[0]!r}: expected {' or '.join(EXPORT_FORMATS)}")
    files = render_report(run_dir, export=formats, out_dir=out)  # type: ignore[arg-type]
    console.print(f"report: {files.html}\nsummary: {files.markdown}\nmetrics: {files.metrics}")
    for p in files.exports:
        console.print(f"export: {p}")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)
    app.command("report")(report_cmd)
