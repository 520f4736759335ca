"""``safethink data build | check | show``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ._common import console, err_console, quiet_hf, split_list

data_app = typer.Typer(help="Build and check SCoT / R2D training data.", no_args_is_help=True)


def check_input_files(sources: list[str], data_dir: Path | None, *files: Path | None) -> None:
    """Fail now, before anything is written, on an input file (a source's local file or data-dir copy,
    the policy) that is missing or not UTF-8: the error names the file, line and byte offset."""
    from ..io import check_text
    from ..synth._plan import check_sources

    check_sources(sources, str(data_dir) if data_dir else None)
    for f in files:
        if f is not None:
            check_text(f)


@data_app.command("build")
def build(
    method: Annotated[str, typer.Option(help="scot or r2d")],
    harmful: Annotated[list[str], typer.Option(help="Harmful source: advbench, harmbench, jbb-harmful, strongreject, "
                                                    "builtin:harmful, a hub id or a file (repeatable).")],
    benign: Annotated[list[str], typer.Option(help="Benign source: harmless, alpaca, dolly, jbb-benign, xstest-safe, "
                                                   "builtin:benign, a file ... (repeatable).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory (shards + manifest.json).")],
    teacher: Annotated[str, typer.Option(help="structured (offline) or openai:<model>@<url>.")] = "structured",
    evolve: Annotated[Optional[list[str]], typer.Option(help="Evolution style (repeatable): all, none, or any of "
                                                             "slang, uncommon_dialects, role_play, "
                                                             "evidence_based_persuasion, logical_appeal, "
                                                             "expert_endorsement (default: none).")] = None,
    evolver: Annotated[str, typer.Option(help="auto, rule (offline) or teacher (the LLM).")] = "auto",
    model: Annotated[str, typer.Option(help="Target model spec that answers the retain prompts.")] = "smollm2-135m",
    limit: Annotated[Optional[int], typer.Option(min=1, help="Harmful prompts per harmful source.")] = None,
    benign_limit: Annotated[Optional[int], typer.Option(min=1, help="Prompts read per benign source.")] = None,
    retain_ratio: Annotated[float, typer.Option(min=0.01, help="Retain records per refusal record.")] = 1.0,
    twins: Annotated[bool, typer.Option("--twins/--no-twins", help="With builtin:harmful, add its benign twins and "
                                                                   "borderline prompts to the retain side.")] = True,
    llm_twins: Annotated[bool, typer.Option("--llm-twins/--no-llm-twins", help="With an LLM --teacher, it writes a "
                                            "benign twin (same topic, benign intent) of every harmful prompt that "
                                            "has no built-in twin, for the retain side.")] = False,
    seed: Annotated[int, typer.Option()] = 0,
    policy: Annotated[Optional[Path], typer.Option(help="Policy YAML (default: the SCoT taxonomy).")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Folder of public dataset copies (or SAFETHINK_DATA_DIR).")] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Cap on retain answers.")] = 128,
    batch_size: Annotated[int, typer.Option(min=1, help="Retain generation batch size.")] = 16,
    concurrency: Annotated[int, typer.Option(min=1, help="Parallel requests to an HTTP teacher.")] = 4,
    fallback: Annotated[str, typer.Option(help="Who writes a record the LLM teacher still fails on after its retries: "
                                               "none (the build exits non-zero naming them; re-run to retry) or "
                                               "structured (the offline teacher; listed in the manifest).")] = "none",
    retag: Annotated[str, typer.Option(help="R2D pivot re-tagging: teacher, heuristic, none, or openai:<model>@<url>.")] = "teacher",
    shard_size: Annotated[int, typer.Option(min=1)] = 256,
    system_prompt: Annotated[Optional[str], typer.Option(help="System message added to every record.")] = None,
    drop_eval_overlap: Annotated[bool, typer.Option(
        "--drop-eval-overlap/--keep-eval-overlap",
        help="Leave out source prompts that are near-duplicates of evaluation prompts (JBB, XSTest, HarmBench, "
             "StrongREJECT, where available offline) before --limit / --benign-limit sample.")] = False,
    overlap_threshold: Annotated[float, typer.Option(
        min=0.01, max=1.0,
        help="Word-set Jaccard similarity from which a training prompt counts as a near-duplicate of an "
             "evaluation prompt (warning and --drop-eval-overlap).")] = 0.8,
    overwrite: Annotated[bool, typer.Option(help="Discard whatever --out holds.")] = False,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Retain-answer cache (default: under SAFETHINK_HOME).")] = None,
) -> None:
    """Build a SCoT or R2D training set; re-run the same command to resume an interrupted build."""
    from ..synth import BuildConfig, build_dataset, parse_styles
    from ._common import progress_bar

    from pydantic import ValidationError

    from ..errors import InputError

    quiet_hf()
    try:
        cfg = BuildConfig(
            method=method, harmful=split_list(harmful), benign=split_list(benign), teacher=teacher,
            evolve=parse_styles(",".join(split_list(evolve)) or "none"),
            evolver=evolver, model=model, limit=limit, benign_limit=benign_limit, retain_ratio=retain_ratio, twins=twins,
            llm_twins=llm_twins, seed=seed, policy=str(policy) if policy else None,
            data_dir=str(data_dir) if data_dir else None,
            max_new_tokens=max_new_tokens, batch_size=batch_size, concurrency=concurrency, fallback=fallback, retag=retag,
            shard_size=shard_size, system_prompt=system_prompt, drop_eval_overlap=drop_eval_overlap,
            overlap_threshold=overlap_threshold,
        )
    except ValidationError as e:
        err = e.errors()[0]
        raise InputError(f"--{'.'.join(map(str, err['loc'])).replace('_', '-')}: {err['msg']}") from None
    check_input_files([*cfg.harmful, *cfg.benign], data_dir, policy)
    bars: dict = {}
    stack = []

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "records":
            if "records" not in bars:
                cm = progress_bar("building records", total)
                bars["records"] = (cm.__enter__(), 0)
                stack.append(cm)
            adv, last = bars["records"]
            adv(done - last)
            bars["records"] = (adv, done)

    try:
        res = build_dataset(cfg, out, progress=progress, cache_dir=cache_dir, overwrite=overwrite)
    finally:
        for cm in reversed(stack):
            cm.__exit__(None, None, None)
    m = res.manifest
    if res.dropped:
        err_console.print(f"left out {len(res.dropped)} source prompt(s) that are near-duplicates of evaluation "
                          f"prompts, e.g. {res.dropped[0].train_id} ~ {res.dropped[0].eval_id}", highlight=False)
    if res.near_duplicates:
        err_console.print(f"[yellow]warning:[/] {len(res.near_duplicates)} training prompts are near-duplicates of "
                          f"evaluation prompts, e.g. {res.near_duplicates[0].train_id} ~ {res.near_duplicates[0].eval_id}"
                          "; do not evaluate on those sets, or drop them", highlight=False)
    ts = res.teacher_stats
    for spec, ids in res.fallbacks.items():
        first = (getattr(m, "fallbacks", None) or {}).get(spec, {}).get("errors") or [{}]
        err_console.print("[yellow]warning:[/] " + escape(
            f"the LLM teacher {spec} failed on {len(ids)} record(s) after its retries; the structured teacher "
            f"wrote them (--fallback structured). Their ids are in {out / 'manifest.json'} under 'fallbacks' "
            f"(first error: {first[0].get('error', '?')})"), highlight=False)
    tw = res.twins
    if tw.get("skipped"):
        first = (getattr(m, "twins_skipped", None) or {}).get("examples") or [{}]
        err_console.print(f"[yellow]warning:[/] the LLM teacher could not write {tw['skipped']} benign twin(s); those "
                          f"harmful prompts have none (first error: {first[0].get('error', '?')})", highlight=False)
    _summary(m.counts, f"{m.method} set in {out}")
    console.print(f"teacher {m.teacher} | policy {m.policy} | styles {', '.join(m.styles) or 'none'} | "
                  f"{len(m.shards)} shard(s) | content {m.content_hash[:16]}"
                  + (f" | resumed {res.resumed}" if res.resumed else "")
                  + (f" | benign twins {tw.get('written', 0)}" if tw else "")
                  + (f" | repairs {ts['repairs']}" if ts.get("repairs") else ""), highlight=False)


def _summary(counts: dict, title: str) -> None:
    table = Table(title=title)
    table.add_column("group")
    table.add_column("value")
    table.add_column("records", justify="right")
    table.add_row("total", "", str(counts.get("total", 0)))
    for key in ("by_kind", "by_label", "by_style", "by_category", "by_source"):
        for k, v in (counts.get(key) or {}).items():
            table.add_row(key[3:], str(k), str(v))
    console.print(table)


@data_app.command("check")
def check(directory: Annotated[Path, typer.Argument(help="A directory written by 'safethink data build'.")]) -> None:
    """Validate a built set (format, hashes, pivot placement, label balance) and summarise it."""
    from ..synth import check_dataset

    rep = check_dataset(directory)
    counts = {"total": rep.records, **{f"by_{k}": dict(sorted(v.items())) for k, v in rep.counts.items()}}
    _summary(counts, f"check {directory}")
    for w in rep.warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False)
    for e in rep.errors:
        err_console.print(f"[red]error:[/] {e}", highlight=False, markup=False)
    if not rep.ok:
        raise typer.Exit(1)
    console.print(f"[green]ok[/]: {rep.records} records")


@data_app.command("show")
def show(
    source: Annotated[str, typer.Argument(help="Dataset name, hub id, builtin:<set> or file.")],
    label: Annotated[Optional[str], typer.Option(help="harmful or benign")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 5,
    seed: Annotated[int, typer.Option()] = 0,
    data_dir: Annotated[Optional[Path], typer.Option()] = None,
) -> None:
    """Print a few prompts of a source as PromptRecord JSON lines (to check a loader or column map)."""
    from ..data import load_prompts

    if label not in (None, "harmful", "benign"):
        raise typer.BadParameter("--label must be harmful or benign")
    check_input_files([source], data_dir)
    for r in load_prompts(source, label=label, limit=limit, seed=seed,  # type: ignore[arg-type]
                          data_dir=str(data_dir) if data_dir else None):
        typer.echo(r.model_dump_json(exclude_defaults=True))


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
