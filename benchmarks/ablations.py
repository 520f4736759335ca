"""Ablations on the bundled model: which parts of the defence matter, on the quickstart's held-out prompts.

The shipped pipeline preset ``ablations`` (``safethink run ablations``) declares the arms and rows: every arm is
trained and evaluated like ``safethink quickstart`` (same split of the built-in seed set, same offline teacher,
same ``cpu-small`` preset and epochs, same attacks and judge); one thing differs:

- method: SCoT vs R2D vs R2D without CPO (cpo_weight 0), and R2D with / without the decode-time pivot guard;
- adapter: LoRA rank 4 / 16 (default) / 64, and full fine-tuning;
- data mix: harmful:benign 1:1 instead of the default (every benign training prompt kept);
- loss: SCoT with its decision tokens (each rule's Yes/No and the conclusion) weighted 5x;
- the probe guard in front of the base model, and in front of R2D (the probe reads the base model's states, R2D
  answers what it passes); and as a router (``r2d-route``, ``r2d-nocpo-route``): the base model answers what the
  probe is sure is benign, R2D what it is unsure of, and what it flags is refused. The probe is the one
  ``safethink quickstart --probe`` fits (``--probe FILE``: another one).

This script runs that preset with its options as ``--set`` assignments, plus two data-mix arms that the pipeline
schema cannot declare and that stay code here: SCoT without the benign twins (ordinary requests in their place,
same count) and R2D without CPO with the twins of every seed pair outside the held-out split as retain data
(``r2d-nocpo-alltwins``: the same 60 harmful prompts, 159 twins instead of 60).

Point ``--out`` at a quickstart directory to reuse its split, data, default runs, probe and evaluations (the run
writes its own ``pipeline.json`` and ``timings.json`` there). ``--train-seed N`` retrains the chosen arms with
another seed (new runs, rows marked with the seed).
One table: ASR per attack family, refusal rate on each benign set, benign answer rate, training time.

    python benchmarks/ablations.py --out runs/quickstart                 # every arm
    python benchmarks/ablations.py --out runs/quickstart --arms scot,r2d,r2d-nocpo

Prints the table and writes benchmarks/results/ablations.json.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from _record import RESULTS, pct, record

from safethink.pipeline import (
    REALISTIC_TEST, PipelineConfig, Plan, QuickstartConfig, VariantEntry, _retain_ratio, _spare_pairs,
    build_training_sets, count_rows, eval_specs, load_pipeline, resolve_variants, run_evaluations, run_pipeline,
    split_seed_set, split_sources, summarise, train_adapter,
)

PRESET = "ablations"
ROWS: dict[str, str | None] = {
    "base": "base",
    "scot": "SCoT",
    "r2d": "R2D",
    "r2d-guard": "R2D + pivot guard",
    "r2d-nocpo": "R2D without CPO",
    "scot-r4": "SCoT LoRA r=4",
    "scot-r64": "SCoT LoRA r=64",
    "scot-full": "SCoT full fine-tuning",
    "scot-notwins": None,
    "scot-1to1": "SCoT harmful:benign 1:1",
    "scot-dw5": "SCoT decision weight 5",
    "base-probe": "base + {intent} guard",
    "r2d-probe": "R2D + {intent} guard",
    "r2d-nocpo-probe": "R2D without CPO + {intent} guard",
    "r2d-nocpo-alltwins": None,
    "r2d-route": "base / R2D router ({intent})",
    "r2d-nocpo-route": "base / R2D without CPO router ({intent})",
}
"""Each arm's key (``--arms``, the ``arm`` of a result row) and the name of its row in the preset's
``eval.variants``, in table order; None: an arm of :data:`CODE_ARMS`."""

CODE_ARMS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "scot-notwins": ({"name": "scot-notwins", "method": "scot", "mix": "no-twins", "overrides": {}},
                     {"name": "SCoT without twins", "adapter": "scot-notwins", "guard": "scot"}),
    "r2d-nocpo-alltwins": ({"name": "r2d-nocpo-alltwins", "method": "r2d", "mix": "all-twins",
                            "overrides": {"cpo_weight": 0.0}},
                           {"name": "R2D without CPO, twins of all pairs", "adapter": "r2d-nocpo-alltwins",
                            "guard": "r2d"}),
}
"""Arms kept as code (an arm of the pipeline schema, a row of its ``eval.variants``): their training mixes need
sources the schema cannot name. ``no-twins`` needs ordinary requests outside the held-out split, as many as the
default mix has twins + ordinary ones (no split file holds them, and a mix source takes no limit); ``all-twins``
needs the spare seed pairs' twins (``_spare_pairs``; not a split file the split stage writes) and a retain ratio
that keeps every benign prompt of the mix's own sources (``retain_ratio: split`` counts the default sources)."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/quickstart", help="A quickstart directory (full mode) to reuse, or a new one.")
    ap.add_argument("--arms", default=",".join(ROWS), help="Comma list of: " + ", ".join(ROWS))
    ap.add_argument("--attacks", default=None, help="Comma list (default: the quickstart's).")
    ap.add_argument("--eval-harmful", type=int, default=None, help="Held-out harmful prompts (default: the quickstart's).")
    ap.add_argument("--eval-benign", type=int, default=None, help="Held-out prompts per benign set.")
    ap.add_argument("--eval-realistic", type=int, default=None,
                    help=f"Held-out realistic requests ({REALISTIC_TEST}; default: the quickstart's, all of them).")
    ap.add_argument("--probe", default=None,
                    help="Probe file for the probe arms (default: the one the pipeline fits, <out>/probe.json).")
    ap.add_argument("--train-seed", type=int, default=None,
                    help="Train the arms' adapters with this seed instead of the quickstart's (new run directories "
                         "<run>-seedN, rows named '(train seed N)'); split, data and evaluation stay the same.")
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="Any other setting of the preset, as safethink run --set (key.path=value; repeatable).")
    ap.add_argument("--json", default=str(RESULTS / "ablations.json"))
    return ap.parse_args(argv)


def plan_rows(args: argparse.Namespace) -> tuple[list[str], list[tuple[str, dict[str, Any]]], list[dict[str, Any]]]:
    """The ``--set`` assignments of ``args`` for the preset (settings only; the arms and rows come from
    :func:`preset_sets`), the chosen rows as (key, variant entry) in table order, and the arms they train, as
    plain dicts of the pipeline schema (``--train-seed`` and ``--probe`` applied)."""
    keys = args.arms.split(",")
    unknown = set(keys) - set(ROWS)
    if unknown:
        raise SystemExit(f"unknown arm(s) {sorted(unknown)}; expected some of {list(ROWS)}")
    base = load_pipeline(PRESET)
    declared = {v.name: v.model_dump() for v in base.eval.variants}
    arms = {a.name: a.model_dump() for a in base.train.arms}
    for key, (arm, row) in CODE_ARMS.items():
        arms[arm["name"]] = arm
        declared[row["name"]] = row
    lost = [n for n in ROWS.values() if n is not None and n not in declared]
    if lost:
        raise SystemExit(f"the {PRESET} preset has no row named {lost}")
    rows = [(k, dict(declared[name or CODE_ARMS[k][1]["name"]])) for k, name in ROWS.items() if k in keys]
    used = [dict(arms[a]) for a in dict.fromkeys(r["adapter"] for _, r in rows if r.get("adapter"))]
    if args.train_seed is not None:
        n = args.train_seed
        for a in used:
            a["name"], a["overrides"] = f"{a['name']}-seed{n}", {**a.get("overrides", {}), "seed": n}
        for _, r in rows:
            if r.get("adapter"):
                r["adapter"], r["name"] = f"{r['adapter']}-seed{n}", f"{r['name']} (train seed {n})"
    if args.probe:
        if not Path(args.probe).is_file():
            raise SystemExit(f"--probe: {args.probe} does not exist (safethink probe fit ... --out {args.probe})")
        for _, r in rows:
            if r["guard"] == "probe":
                r["args"], r["requires"] = {**r.get("args", {}), "path": args.probe}, []
    sets = [*setting_sets(args, base), *args.sets]
    intent = any("intent" in r.get("requires", []) for _, r in rows)
    sets.append(f"probes.intent.enabled={str(intent).lower()}")
    return sets, rows, used


def setting_sets(args: argparse.Namespace, base: PipelineConfig) -> list[str]:
    """``--attacks`` and the held-out sizes as ``--set`` assignments of the preset's evaluation."""
    sets = [f"eval.attacks={json.dumps(args.attacks.split(','))}"] if args.attacks else []
    for i, d in enumerate(base.eval.datasets):
        limit = (args.eval_harmful if d.label == "harmful" else args.eval_realistic if d.source == REALISTIC_TEST
                 else args.eval_benign)
        if limit:
            sets.append(f"eval.datasets.{i}.limit={limit}")
    return sets


def preset_sets(rows: list[tuple[str, dict[str, Any]]], used: list[dict[str, Any]]) -> list[str]:
    """The chosen rows and arms the pipeline runs (those not in :data:`CODE_ARMS`) as ``--set`` assignments."""
    code = {r["adapter"] for k, r in rows if k in CODE_ARMS}
    mine = [r for k, r in rows if k not in CODE_ARMS]
    arms = [a for a in used if a["name"] not in code]
    return [f"train.arms={json.dumps(arms)}", f"eval.variants={json.dumps(mine)}"] if mine else []


def _ordinary_instead_of_twins(cfg: QuickstartConfig, splits: dict[str, Path]) -> Path:
    """Ordinary training requests, as many as the default mix has twins + ordinary ones, none held out."""
    from safethink.data import load_prompts
    from safethink.io import atomic_write_text

    dest = cfg.out / "splits" / "ablation_ordinary_train.jsonl"
    if dest.is_file():
        return dest
    held_out = {json.loads(line)["prompt"] for line in splits["benign_eval"].read_text().splitlines() if line.strip()}
    want = count_rows(splits["twins_train"]) + count_rows(splits["benign_train"])
    pool = [r for r in load_prompts("builtin:benign") if r.prompt not in held_out]
    if len(pool) < want:
        raise SystemExit(f"the seed set has {len(pool)} ordinary training prompts; the no-twins mix needs {want}")
    rows = [{"id": r.meta.get("seed_id", r.id), "prompt": r.prompt, "label": "benign"} for r in pool[:want]]
    atomic_write_text(dest, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return dest


def training_data(cfg: QuickstartConfig, splits: dict[str, Path], arm: dict[str, Any], progress) -> Path:
    """The training set of a :data:`CODE_ARMS` arm (its ``mix``: ``no-twins`` or ``all-twins``)."""
    harmful, benign = split_sources(splits)
    method = arm["method"]
    if arm["mix"] == "no-twins":
        benign = [str(_ordinary_instead_of_twins(cfg, splits)), str(splits["borderline_train"])]
        return build_training_sets(cfg, harmful, benign, progress, retain_ratio=_retain_ratio(splits),
                                   methods=(method,), tag="-no-twins")[method]
    if arm["mix"] == "all-twins":
        # the same harmful prompts; as retain data the twins of every seed pair outside the held-out split
        _, spare_twins = _spare_pairs(cfg, splits)
        benign = [*benign, str(spare_twins)]
        ratio = sum(count_rows(Path(b)) for b in benign) / max(1, count_rows(splits["harmful_train"]))
        return build_training_sets(cfg, harmful, benign, progress, retain_ratio=ratio, methods=(method,),
                                   tag="-all-twins")[method]
    raise ValueError(arm["mix"])


def run_code_arms(pc: PipelineConfig, out: Path, rows: list[dict[str, Any]], arms: list[dict[str, Any]],
                  progress) -> float:
    """Train and evaluate the :data:`CODE_ARMS` rows with the settings, held-out sets and judges of ``pc``, into
    the pipeline's results store in ``out``; returns the eval seconds."""
    plan = Plan.from_config(pc, out)
    cfg = plan.settings
    splits = split_seed_set(cfg)
    runs = {}
    for arm in arms:
        data = training_data(cfg, splits, arm, progress)
        runs[arm["name"]] = train_adapter(cfg, arm["method"], data, cfg.out / "runs" / arm["name"],
                                          arm.get("overrides"), progress, preset=arm.get("preset", "cpu-small"))
    variants = resolve_variants([VariantEntry.model_validate(r) for r in rows], cfg)
    t0 = time.perf_counter()
    run_evaluations(eval_specs(cfg, plan.resolve(plan.datasets), runs, variants, plan.judges), progress)
    return time.perf_counter() - t0


def main() -> None:
    args = parse_args()
    console = Console()
    out = Path(args.out)
    sets, rows, used = plan_rows(args)

    def progress(what: str, done: int, total: int) -> None:
        if not total or done == total:
            console.log(f"{what} {done}/{total}" if total else what)

    t_eval = 0.0
    pipeline = preset_sets(rows, used)
    if pipeline:
        console.log(f"safethink run {PRESET} --out {out} " + " ".join(f"--set '{s}'" for s in [*sets, *pipeline]))
        run_pipeline(load_pipeline(PRESET, [*sets, *pipeline]), out, progress)
        stages = json.loads((out / "timings.json").read_text())["stages"]
        t_eval = sum(s for k, s in stages.items() if k.startswith("eval "))
    pc = load_pipeline(PRESET, sets)
    cfg = pc.settings(out)
    # kept as code: the two arms whose training mixes the pipeline schema cannot declare (CODE_ARMS)
    code_rows = [r for k, r in rows if k in CODE_ARMS]
    if code_rows:
        code_arms = [a for a in used if any(a["name"] == r["adapter"] for r in code_rows)]
        t_eval += run_code_arms(pc, out, code_rows, code_arms, progress)

    variants = {k: resolve_variants([VariantEntry.model_validate(r)], cfg)[0] for k, r in rows}
    table, attacks, sets_ = summarise(cfg.out / "eval", tuple(variants.values()))

    from safethink.attacks import ATTACKS

    families: dict[str, list[str]] = {}
    for a in attacks:
        families.setdefault(ATTACKS.get(a).family, []).append(a)
    key_of = {v.name: k for k, v in variants.items()}
    adapter_of = {k: r.get("adapter") for k, r in rows}
    out_rows = []
    for r in table:
        key = key_of[r.variant]
        fam_asr = {f: sum(r.asr[a] for a in names) / len(names) for f, names in families.items()}
        run = cfg.out / "runs" / adapter_of[key] / "safethink_run.json" if adapter_of[key] else None
        secs = json.loads(run.read_text())["seconds"] if run and run.is_file() else None
        out_rows.append({"arm": key, **r.__dict__, "asr_family": fam_asr, "train_seconds": secs})
    columns: dict[str, Any] = {"arm": "variant"}
    for fam, names in families.items():
        columns[f"ASR {fam} ({len(names)})"] = lambda r, fam=fam: pct(r["asr_family"][fam])
    columns["ASR all [95% CI]"] = lambda r: f"{pct(r['asr_all'])} [{pct(r['asr_ci'][0])}-{pct(r['asr_ci'][1])}]"
    for s in sets_:
        columns[f"refused: {s}"] = lambda r, s=s: pct(r["over_refusal"].get(s))
    columns["benign answered"] = lambda r: pct(r["benign_answer"])
    columns["train s"] = lambda r: "-" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}"
    record("ablations", out_rows, out=args.json, columns=columns,
           title=f"ablations ({cfg.model}; held-out: {cfg.eval_harmful} harmful x {len(attacks)} attacks, "
                 f"{cfg.eval_benign} per benign set, {cfg.eval_realistic or 'all'} realistic)",
           families=families, sets=sets_, eval_seconds=t_eval, preset=PRESET, pipeline_sets=[*sets, *pipeline])
    console.print(f"report: safethink report {cfg.out / 'eval'}")


if __name__ == "__main__":
    main()
