"""Running a pipeline config: every stage in order, each cached in the output directory and skipped when its
files are there, each stage's wall time in ``out/timings.json``."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import atomic_write_text
from ._config import Arm, Mix, PipelineConfig, load_pipeline
from ._eval import SummaryRow, realistic_eval_dataset, run_evaluation, spec_dicts, summarise
from ._probes import fit_quickstart_probe, fit_quickstart_wrapper
from ._settings import StageProgress, QuickstartConfig, Variant, _quiet, resolve_variants
from ._stages import _retain_ratio, build_training_sets, split_seed_set, train_adapter
from ._workers import Task, resolve_workers, run_tasks

Summary = tuple[list[SummaryRow], list[str], list[str]]
"""``summarise``'s rows, attacks and benign sets: the before/after table."""


@dataclass
class Plan:
    """A pipeline config resolved for one output directory: the flat settings and the declared lists."""

    settings: QuickstartConfig
    mixes: dict[str, Mix]
    arms: list[Arm]
    variants: tuple[Variant, ...]
    datasets: list[dict[str, Any]]
    """Eval-spec dataset entries; a ``split:<name>`` source is the split stage's file."""
    judges: list[dict[str, Any]]
    config: dict[str, Any] | None = None
    """The pipeline config it came from (written to ``out/pipeline.json``)."""

    @classmethod
    def from_config(cls, pc: PipelineConfig, out: Path) -> Plan:
        cfg = pc.settings(out)
        datasets = [{"source": d.source, "label": d.label, **({"limit": d.limit} if d.limit is not None else {}),
                     "name": d.name} for d in pc.eval.datasets]
        return cls(cfg, dict(pc.data.mixes), list(pc.train.arms), resolve_variants(pc.eval.variants, cfg), datasets,
                   [dict(j) for j in pc.eval.judges], pc.model_dump(mode="json"))

    @classmethod
    def from_settings(cls, cfg: QuickstartConfig) -> Plan:
        """The ``quickstart`` preset's mixes, arms, rows and judges, with ``cfg``'s settings and held-out sets."""
        pc = load_pipeline("quickstart")
        split = [("split:harmful_eval", "harmful", cfg.eval_harmful, "held-out harmful"),
                 ("split:twins_eval", "benign", cfg.eval_benign, "benign twins"),
                 ("split:benign_eval", "benign", cfg.eval_benign, "ordinary"),
                 ("split:borderline_eval", "benign", cfg.eval_benign, "safe-but-scary")]
        datasets = [{"source": s, "label": lab, "limit": n, "name": name} for s, lab, n, name in split]
        return cls(cfg, dict(pc.data.mixes), list(pc.train.arms), resolve_variants(pc.eval.variants, cfg),
                   [*datasets, realistic_eval_dataset(cfg.eval_realistic)], [dict(j) for j in pc.eval.judges])

    def resolve(self, entries: list[dict[str, Any]] | list[str]) -> Any:
        """Datasets (or source lists) with each ``split:<name>`` source the split stage's file."""
        def path(s: str) -> str:
            return str(self.settings.out / "splits" / f"{s[6:]}.jsonl") if s.startswith("split:") else s

        return [path(e) if isinstance(e, str) else {**e, "source": path(e["source"])} for e in entries]

    def spec_dicts(self, runs: dict[str, Path] | None = None) -> list[dict[str, Any]]:
        """The eval specs (as dicts) of every row; ``runs`` defaults to ``out/runs/<arm>``."""
        runs = runs or {a.name: self.settings.out / "runs" / a.name for a in self.arms}
        return spec_dicts(self.settings, self.resolve(self.datasets), runs, self.variants, self.judges)


def run_pipeline(pc: PipelineConfig, out: Path, progress: StageProgress = _quiet) -> tuple[Summary, Any]:
    """Every stage of ``pc`` in order, into ``out``; stages already done are skipped. Returns the table and the
    report files."""
    return run_plan(Plan.from_config(pc, Path(out)), progress)


def run_quickstart(cfg: QuickstartConfig, progress: StageProgress = _quiet) -> tuple[Summary, Any]:
    """The ``quickstart`` preset's stages with the settings ``cfg``."""
    return run_plan(Plan.from_settings(cfg), progress)


def run_plan(plan: Plan, progress: StageProgress = _quiet) -> tuple[Summary, Any]:
    """Every stage in order; stages already done are skipped. Returns the table (``summarise``'s rows, attacks,
    benign sets) and the report files. Each stage's wall time is written to ``out/timings.json`` as it ends
    (:class:`StageClock`)."""
    from ..eval import parse_spec, render_report

    cfg = plan.settings
    cfg.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cfg.out / "quickstart.json", json.dumps(
        {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.__dict__.items()}, indent=1, default=str))
    if plan.config is not None:
        atomic_write_text(cfg.out / "pipeline.json", json.dumps(plan.config, indent=1))
    clock = StageClock(cfg.out / "timings.json", cfg.model)
    progress("split seed set", 0, 0)
    with clock("split"):
        splits = split_seed_set(cfg)
    data: dict[tuple[str, str], Path] = {}
    with clock("data"):
        for name, mix in plan.mixes.items():
            methods = tuple(dict.fromkeys(a.method for a in plan.arms if a.mix == name))
            if not methods:
                continue
            ratio = _retain_ratio(splits) if mix.retain_ratio == "split" else mix.retain_ratio
            built = build_training_sets(cfg, plan.resolve(mix.harmful), plan.resolve(mix.benign), progress,
                                        retain_ratio=ratio, methods=methods, tag=mix.tag, limit=mix.limit,
                                        benign_limit=mix.benign_limit, drop_eval_overlap=mix.drop_eval_overlap,
                                        overlap_threshold=mix.overlap_threshold)
            data.update({(name, m): p for m, p in built.items()})
    tasks = [Task(f"train {arm.name}", train_adapter,
                  (cfg, arm.method, data[(arm.mix, arm.method)], cfg.out / "runs" / arm.name, arm.overrides),
                  {"preset": arm.preset}) for arm in plan.arms]
    runs = {arm.name: cfg.out / "runs" / arm.name for arm in plan.arms}
    probes: dict[str, str] = {}  # a probe's file -> the stage that fits it (rows whose guard reads it wait for it)
    if cfg.probe:
        probes[str(cfg.probe_path)] = "probe"
        tasks.append(Task("probe", fit_quickstart_probe, (cfg, splits)))
    if cfg.probe_wrapper:
        probes[str(cfg.wrapper_path)] = "wrapper probe"
        tasks.append(Task("wrapper probe", fit_quickstart_wrapper, (cfg, splits)))
    specs = plan.spec_dicts(runs)
    first_of: dict[Any, str] = {}  # the first row of each model + adapter generates the answers later rows reuse
    for variant, spec in zip(plan.variants, specs):
        name = f"eval {variant.name}"
        after = [f"train {variant.adapter}"] if variant.adapter else []
        after += [stage for path, stage in probes.items() if path in json.dumps(variant.guard_args)]
        key = (spec["models"][0]["spec"], spec["models"][0].get("adapter"))
        if key in first_of:
            after.append(first_of[key])
        else:
            first_of[key] = name
        tasks.append(Task(name, run_evaluation, (spec,), after=tuple(dict.fromkeys(after))))
    workers, threads = resolve_workers(cfg.workers, clock.machine["device"])
    clock.machine.update(workers=workers, threads_per_worker=threads if workers > 1 else clock.machine["torch_threads"])
    run_tasks(tasks, workers=workers, threads=threads, progress=progress, started=clock.start, finished=clock.stop)
    eval_dir = cfg.out / "eval"
    progress("report", 0, 0)
    with clock("report"):
        files = render_report(eval_dir)
    return summarise(eval_dir, plan.variants), files


class StageClock:
    """Wall time per stage, written (atomically) to a JSON file as each stage ends, with what decides it:
    the machine's CPU count, torch's threads and the dtype ``auto`` loads the model in. A stage served from the
    output directory's cache shows as the seconds it took to find it there."""

    def __init__(self, path: Path, model: str):
        self.path = path
        self.stages: dict[str, float] = {}
        self._running: dict[str, float] = {}
        self.started = time.perf_counter()
        self.machine = _machine_facts(model)

    @contextmanager
    def __call__(self, stage: str):
        self.start(stage)
        try:
            yield
        finally:
            self.stop(stage)

    def start(self, stage: str) -> None:
        self._running[stage] = time.perf_counter()

    def stop(self, stage: str) -> None:
        self.stages[stage] = round(time.perf_counter() - self._running.pop(stage), 1)
        atomic_write_text(self.path, json.dumps({
            "stages": self.stages, "total_seconds": round(time.perf_counter() - self.started, 1),
            "machine": self.machine}, indent=1))


def _machine_facts(model: str) -> dict[str, Any]:
    import os

    import torch

    from ..models._hf import pick_device_dtype

    device, dtype = pick_device_dtype(None, None)
    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device,
            "auto_dtype": str(dtype).removeprefix("torch."), "model": model}
