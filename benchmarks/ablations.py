"""Ablations on the bundled model: which parts of the defence matter, on the quickstart's held-out prompts.

Every arm is trained and evaluated like ``safethink quickstart`` (same split of the built-in seed set,
same offline teacher, same ``cpu-small`` preset and epochs, same attacks and judge); one thing differs:

- method: SCoT vs R2D vs R2D without CPO (cpo_weight 0), and R2D with / without the decode-time pivot guard;
- adapter: LoRA rank 4 / 16 (default) / 64, and full fine-tuning;
- data mix: without the benign twins (ordinary requests in their place, same count), and
  harmful:benign 1:1 instead of the default (every benign training prompt kept), and R2D without CPO with
  the twins of every seed pair outside the held-out split as retain data (``r2d-nocpo-alltwins``: the same
  60 harmful prompts, 159 twins instead of 60);
- loss: SCoT with its decision tokens (each rule's Yes/No and the conclusion) weighted 5x;
- the probe guard (``--probe``, a probe fitted on the base model with ``safethink probe fit``) in front of
  the base model, and in front of R2D (the probe reads the base model's states, R2D answers what it passes);
  and as a router (``r2d-route``, ``r2d-nocpo-route``): the base model answers what the probe is sure is
  benign, R2D what it is unsure of, and what it flags is refused.

Point ``--out`` at a quickstart directory to reuse its split, data, default runs and evaluations.
``--train-seed N`` retrains the chosen arms with another seed (new runs, rows marked with the seed).
One table: ASR per attack family, refusal rate on each benign set, benign answer rate, training time.

    python benchmarks/ablations.py --out runs/quickstart                 # every arm
    python benchmarks/ablations.py --out runs/quickstart --arms scot,r2d,r2d-nocpo

Prints the table and writes benchmarks/results/ablations.json.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from _record import RESULTS, pct, record

from safethink.pipeline import (
    QuickstartConfig, Variant, _retain_ratio, _spare_pairs, build_training_sets, count_rows, eval_specs, run_evaluations,
    split_eval_datasets, split_seed_set, split_sources, summarise, train_adapter,
)


@dataclass(frozen=True)
class Arm:
    key: str
    name: str
    """Row label (also the defence name in the results store)."""
    method: str | None
    """scot / r2d, or None for the base model."""
    guard: str
    data: str = "default"
    """default, no-twins, ratio-1 or all-twins."""
    train: dict[str, Any] = field(default_factory=dict)
    run: str | None = None
    """Run directory name under out/runs (arms that differ only at inference share one)."""
    guard_args: dict[str, Any] = field(default_factory=dict)
    """Guard options; a ``probe`` guard gets ``path`` from ``--probe``."""


ARMS = (
    Arm("base", "base", None, "none"),
    Arm("scot", "SCoT", "scot", "scot", run="scot"),
    Arm("r2d", "R2D", "r2d", "r2d", run="r2d"),
    Arm("r2d-guard", "R2D + pivot guard", "r2d", "r2d-pivot", run="r2d"),
    Arm("r2d-nocpo", "R2D without CPO", "r2d", "r2d", train={"cpo_weight": 0.0}, run="r2d-nocpo"),
    Arm("scot-r4", "SCoT LoRA r=4", "scot", "scot", train={"lora_r": 4, "lora_alpha": 8}, run="scot-r4"),
    Arm("scot-r64", "SCoT LoRA r=64", "scot", "scot", train={"lora_r": 64, "lora_alpha": 128}, run="scot-r64"),
    Arm("scot-full", "SCoT full fine-tuning", "scot", "scot", train={"full_ft": True, "lr": 5e-5}, run="scot-full"),
    Arm("scot-notwins", "SCoT without twins", "scot", "scot", data="no-twins", run="scot-notwins"),
    Arm("scot-1to1", "SCoT harmful:benign 1:1", "scot", "scot", data="ratio-1", run="scot-1to1"),
    Arm("scot-dw5", "SCoT decision weight 5", "scot", "scot", train={"decision_weight": 5.0}, run="scot-dw5"),
    Arm("base-probe", "base + probe guard", None, "probe"),
    Arm("r2d-probe", "R2D + probe guard", "r2d", "probe", run="r2d", guard_args={"then": "r2d", "states": "base"}),
    Arm("r2d-nocpo-probe", "R2D without CPO + probe guard", "r2d", "probe", train={"cpo_weight": 0.0}, run="r2d-nocpo",
        guard_args={"then": "r2d", "states": "base"}),
    Arm("r2d-nocpo-alltwins", "R2D without CPO, twins of all pairs", "r2d", "r2d", data="all-twins",
        train={"cpo_weight": 0.0}, run="r2d-nocpo-alltwins"),
    Arm("r2d-route", "base / R2D router (probe)", "r2d", "probe", run="r2d",
        guard_args={"then": "r2d", "states": "base", "route": "base"}),
    Arm("r2d-nocpo-route", "base / R2D without CPO router (probe)", "r2d", "probe", train={"cpo_weight": 0.0},
        run="r2d-nocpo", guard_args={"then": "r2d", "states": "base", "route": "base"}),
)


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


def training_data(cfg: QuickstartConfig, splits: dict[str, Path], arm: Arm, progress) -> Path:
    harmful, benign = split_sources(splits)
    if arm.data == "default":
        return build_training_sets(cfg, harmful, benign, progress, retain_ratio=_retain_ratio(splits),
                                   methods=(arm.method,))[arm.method]
    if arm.data == "ratio-1":
        return build_training_sets(cfg, harmful, benign, progress, retain_ratio=1.0, methods=(arm.method,),
                                   tag="-ratio-1")[arm.method]
    if arm.data == "no-twins":
        benign = [str(_ordinary_instead_of_twins(cfg, splits)), str(splits["borderline_train"])]
        return build_training_sets(cfg, harmful, benign, progress, retain_ratio=_retain_ratio(splits),
                                   methods=(arm.method,), tag="-no-twins")[arm.method]
    if arm.data == "all-twins":
        # the same harmful prompts; as retain data the twins of every seed pair outside the held-out split
        _, spare_twins = _spare_pairs(cfg, splits)
        benign = [*benign, str(spare_twins)]
        ratio = sum(count_rows(Path(b)) for b in benign) / max(1, count_rows(splits["harmful_train"]))
        return build_training_sets(cfg, harmful, benign, progress, retain_ratio=ratio, methods=(arm.method,),
                                   tag="-all-twins")[arm.method]
    raise ValueError(arm.data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/quickstart", help="A quickstart directory (full mode) to reuse, or a new one.")
    ap.add_argument("--arms", default=",".join(a.key for a in ARMS), help="Comma list of: " + ", ".join(a.key for a in ARMS))
    ap.add_argument("--attacks", default=None, help="Comma list (default: the quickstart's).")
    ap.add_argument("--eval-harmful", type=int, default=None, help="Held-out harmful prompts (default: the quickstart's).")
    ap.add_argument("--eval-benign", type=int, default=None, help="Held-out prompts per benign set.")
    ap.add_argument("--eval-realistic", type=int, default=None,
                    help="Held-out realistic requests (builtin:realistic-test; default: the quickstart's, all of them).")
    ap.add_argument("--probe", default=None, help="Probe file for the probe arms (default: <out>/probe.json).")
    ap.add_argument("--train-seed", type=int, default=None,
                    help="Train the arms' adapters with this seed instead of the quickstart's (new run directories "
                         "<run>-seedN, rows named '(train seed N)'); split, data and evaluation stay the same.")
    ap.add_argument("--json", default=str(RESULTS / "ablations.json"))
    args = ap.parse_args()

    console = Console()
    cfg = QuickstartConfig.for_mode(Path(args.out), fast=False)
    if args.attacks:
        cfg.attacks = tuple(args.attacks.split(","))
    if args.eval_harmful:
        cfg.eval_harmful = args.eval_harmful
    if args.eval_benign:
        cfg.eval_benign = args.eval_benign
    if args.eval_realistic:
        cfg.eval_realistic = args.eval_realistic
    arms = [a for a in ARMS if a.key in args.arms.split(",")]
    unknown = set(args.arms.split(",")) - {a.key for a in ARMS}
    if unknown:
        raise SystemExit(f"unknown arm(s) {sorted(unknown)}; expected some of {[a.key for a in ARMS]}")
    if args.train_seed is not None:
        n = args.train_seed
        arms = [replace(a, name=f"{a.name} (train seed {n})", run=f"{a.run}-seed{n}", train={**a.train, "seed": n})
                if a.method else a for a in arms]

    def progress(what: str, done: int, total: int) -> None:
        if not total or done == total:
            console.log(f"{what} {done}/{total}" if total else what)

    cfg.out.mkdir(parents=True, exist_ok=True)
    splits = split_seed_set(cfg)
    runs: dict[str, Path] = {}
    train_seconds: dict[str, float] = {}
    for arm in arms:
        if arm.method is None or arm.run in runs:
            continue
        data = training_data(cfg, splits, arm, progress)
        dest = train_adapter(cfg, arm.method, data, cfg.out / "runs" / arm.run, arm.train, progress)
        runs[arm.run] = dest
        train_seconds[arm.run] = json.loads((dest / "safethink_run.json").read_text())["seconds"]

    probe = args.probe or str(cfg.out / "probe.json")
    if any(a.guard == "probe" for a in arms) and not Path(probe).is_file():
        raise SystemExit(f"the probe arms need a probe file: {probe} does not exist (safethink probe fit ... --out {probe})")
    variants = tuple(Variant(a.name, a.run, a.guard, {**a.guard_args, "path": probe} if a.guard == "probe" else a.guard_args)
                     for a in arms)
    t0 = time.perf_counter()
    eval_dir = run_evaluations(eval_specs(cfg, split_eval_datasets(cfg, splits), runs, variants), progress)
    t_eval = time.perf_counter() - t0
    rows, attacks, sets = summarise(eval_dir, variants)

    from safethink.attacks import ATTACKS

    families: dict[str, list[str]] = {}
    for a in attacks:
        families.setdefault(ATTACKS.get(a).family, []).append(a)
    by_name = {a.name: a for a in arms}
    out_rows = []
    for r in rows:
        arm = by_name[r.variant]
        fam_asr = {f: sum(r.asr[a] for a in names) / len(names) for f, names in families.items()}
        secs = train_seconds.get(arm.run) if arm.run else None
        out_rows.append({"arm": arm.key, **r.__dict__, "asr_family": fam_asr, "train_seconds": secs})
    columns: dict[str, Any] = {"arm": "variant"}
    for fam, names in families.items():
        columns[f"ASR {fam} ({len(names)})"] = lambda r, fam=fam: pct(r["asr_family"][fam])
    columns["ASR all [95% CI]"] = lambda r: f"{pct(r['asr_all'])} [{pct(r['asr_ci'][0])}-{pct(r['asr_ci'][1])}]"
    for s in sets:
        columns[f"refused: {s}"] = lambda r, s=s: pct(r["over_refusal"].get(s))
    columns["benign answered"] = lambda r: pct(r["benign_answer"])
    columns["train s"] = lambda r: "-" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}"
    record("ablations", out_rows, out=args.json, columns=columns,
           title=f"ablations ({cfg.model}; held-out: {cfg.eval_harmful} harmful x {len(attacks)} attacks, "
                 f"{cfg.eval_benign} per benign set, {cfg.eval_realistic or 'all'} realistic)",
           families=families, sets=sets, eval_seconds=t_eval)
    console.print(f"report: safethink report {eval_dir}")


if __name__ == "__main__":
    main()
