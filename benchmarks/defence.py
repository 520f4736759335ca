"""Defence quality on public data: SCoT and R2D trained and evaluated on public sets.

Train: AdvBench harmful prompts + harmless instructions (Alpaca, from the refusal-direction splits) +
safethink's own benign twins and safe-but-scary prompts. Evaluate (never trained on): JBB harmful +
benign, HarmBench val, StrongREJECT small, XSTest safe + unsafe, under the transform-attack suite.
Ordinary requests: held-out Alpaca instructions (``harmless-val``), for the benign answer rate, and requests as
real users send them (``builtin:realistic-test``: pasted documents, emails, code, personas, earlier turns; all 86
by default), since a guard can refuse nothing on one-line sets and every request that carries context.
Variants: base, base + a prompt-only defence, SCoT, R2D, R2D + pivot guard (``--variants`` picks some);
with ``--probe`` also R2D behind the probe guard and the probe router (base / R2D), the probe fitted on the
base model's states of the training prompts under ``--probe-attacks``; with ``--wrapper-path`` also the rows
behind a wrapper probe, which refuses requests that come inside an attack template or encoding.
The attack suite runs on the ``--attacked`` sets (default: JBB harmful); the
other harmful sets get the plain request, so the cost stays within a CPU's reach.

AdvBench prompts that are near copies of an evaluation prompt (word-set Jaccard >= 0.6; JBB reuses AdvBench)
are dropped before anything is trained on them.

The shipped pipeline preset ``defence`` declares the model, arms, attacks, evaluation sets, judges and rows; this
script resolves it with its options as ``--set`` assignments and runs its stages, with three parts kept as code
because the pipeline schema cannot declare them yet: the training sample (``--train-harmful`` and
``--benign-per-source``: a mix has no per-source limit) after the near-copy filter (a mix has no such filter),
the harmful sets asked without attacks (``eval.attacks`` applies to every harmful dataset), and the probe fitted
on the public training prompts (the probe stage fits on the seed split).

    python benchmarks/defence.py --data-dir ../shared/data --out runs/defence [--train-harmful 60] [--eval-limit 10] [--probe]

Prints the table and writes benchmarks/results/defence.json; stages are cached in --out.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from _record import RESULTS, markdown_table, pct, record
from safethink.data import find_near_duplicates, load_eval_prompts, load_prompts
from safethink.io import write_jsonl
from safethink.pipeline import (
    REALISTIC_TEST, REALISTIC_TRAIN, TRANSFORM_ATTACKS, Plan, QuickstartConfig, VariantEntry, build_training_sets,
    eval_specs, load_pipeline, resolve_variants, run_evaluations, summarise, train_adapter,
)

PRESET = "defence"
HARMFUL_SETS = {"jbb-harmful": "JBB harmful", "harmbench": "HarmBench val", "strongreject": "StrongREJECT"}
BENIGN_SETS = {"jbb-benign": "JBB benign", "xstest": "XSTest safe", "harmless-val": "Alpaca (held out)",
               REALISTIC_TEST: "realistic (held out)"}
"""One-line benign sets, and safethink's held-out realistic requests (pasted material, personas, earlier turns)."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--out", default="runs/defence")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--train-harmful", type=int, default=60, help="AdvBench prompts trained on (each adds an evolved rewrite).")
    ap.add_argument("--benign-per-source", type=int, default=40,
                    help="Benign prompts trained on from each of: safethink twins, safe-but-scary, Alpaca harmless.")
    ap.add_argument("--eval-limit", type=int, default=10, help="Prompts per harmful evaluation set.")
    ap.add_argument("--benign-limit", type=int, default=None, help="Prompts per benign set (default: --eval-limit).")
    ap.add_argument("--realistic-limit", type=int, default=None,
                    help=f"Prompts of {REALISTIC_TEST} (default: all 86; the other benign sets take --benign-limit).")
    ap.add_argument("--probe", action="store_true",
                    help="Also fit the probe guard and evaluate R2D behind it and the probe router (base / R2D).")
    ap.add_argument("--probe-path", default=None,
                    help="With --probe: guard with this probe (a linear probe file or a tuned probe directory, fitted "
                         "on prompts none of the evaluation sets hold) instead of fitting one on the training prompts.")
    ap.add_argument("--probe-tune", action="store_true",
                    help="With --probe: fit a tuned probe (safethink probe fit --tune) instead of the linear one.")
    ap.add_argument("--probe-harmful", type=int, default=None,
                    help="AdvBench prompts the probe is fitted on (default: the --train-harmful ones; any other "
                         "AdvBench prompt outside the evaluation's near copies is fair too).")
    ap.add_argument("--probe-forms-per-request", type=int, default=None,
                    help="Put each probe request under this many of --probe-attacks (default: under all).")
    ap.add_argument("--probe-attacks", default=None, help="Attacks the probe is fitted under (default: --attacks).")
    ap.add_argument("--probe-benign", type=int, default=40,
                    help="Benign prompts the probe is fitted on from each of: safethink twins, safe-but-scary, "
                         "ordinary, Alpaca harmless (the harmful ones: the --train-harmful AdvBench prompts).")
    ap.add_argument("--probe-negatives", default=REALISTIC_TRAIN,
                    help="Comma list of benign sources the probe takes as extra negatives as sent, its threshold held "
                         "to at most 2%% of them flagged out of fold ('' for none).")
    ap.add_argument("--wrapper-path", default=None,
                    help="A wrapper probe (safethink probe fit --target wrapper): adds the rows base and R2D "
                         "behind it, and with --probe the base model behind it and the intent probe chained after "
                         "it (the probe guard's then=probe).")
    ap.add_argument("--attacks", default=",".join(TRANSFORM_ATTACKS))
    ap.add_argument("--attacked", default="jbb-harmful", help="Harmful sets that get every attack (comma list).")
    ap.add_argument("--variants", default=None, help="Variant names (comma list; default: all).")
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="Any other setting of the preset, as safethink run --set (key.path=value; repeatable).")
    ap.add_argument("--json", default=str(RESULTS / "defence.json"))
    return ap.parse_args(argv)


def preset_sets(args: argparse.Namespace) -> list[str]:
    """The options as ``--set`` assignments of the ``defence`` preset (checked against it: unknown sets,
    variants or files are errors)."""
    base = load_pipeline(PRESET)
    attacked = args.attacked.split(",")
    unknown = set(attacked) - set(HARMFUL_SETS)
    if unknown:
        raise SystemExit(f"--attacked: unknown {sorted(unknown)}; known: {list(HARMFUL_SETS)}")
    probe = args.probe or args.probe_tune
    if args.probe_path and not probe:
        raise SystemExit("--probe-path needs --probe")
    sets = [f"model={json.dumps(args.model)}", f"seed={args.seed}", f"eval.attacks={json.dumps(args.attacks.split(','))}",
            f"eval.generation.max_new_tokens={args.max_new_tokens}",
            f"probes.intent.enabled={str(probe).lower()}", f"probes.intent.tune={str(args.probe_tune).lower()}",
            f"probes.intent.attacks={json.dumps((args.probe_attacks or args.attacks).split(','))}",
            f"probes.negatives={json.dumps([s for s in args.probe_negatives.split(',') if s])}"]
    datasets = [d.model_dump(exclude_none=True) for d in base.eval.datasets]
    if [d["source"] for d in datasets if d["label"] == "harmful"] != attacked:
        datasets = [*({"source": s, "label": "harmful", "name": HARMFUL_SETS[s]} for s in attacked),
                    *(d for d in datasets if d["label"] == "benign")]
        sets.append(f"eval.datasets={json.dumps(datasets)}")
    for i, d in enumerate(datasets):
        limit = (args.eval_limit if d["label"] == "harmful" else args.realistic_limit if d["source"] == REALISTIC_TEST
                 else args.benign_limit or args.eval_limit)
        sets.append(f"eval.datasets.{i}.limit={json.dumps(limit)}")
    sets += args.sets
    entries = [v.model_dump() for v in base.eval.variants]
    if args.probe_path:
        if not Path(args.probe_path).exists():
            raise SystemExit(f"--probe-path: {args.probe_path} does not exist")
        # named after the probe, so the results store never mixes its answers with another probe's
        tag = Path(args.probe_path).name
        entries = [{**e, "name": f"{e['name']} ({tag})", "args": {**e["args"], "path": args.probe_path}}
                   if e["guard"] == "probe" else e for e in entries]
    if args.wrapper_path:
        entries += wrapper_entries(args)
    cfg = load_pipeline(PRESET, sets).settings(Path(args.out))
    named = {e["name"]: resolve_variants([VariantEntry.model_validate(e)], cfg) for e in entries}
    known = [v[0].name for v in named.values() if v]
    wanted = args.variants.split(",") if args.variants else known
    unknown = set(wanted) - set(known)
    if unknown:
        raise SystemExit(f"--variants: unknown {sorted(unknown)}; known: {known}")
    picked = [e for e in entries  # a row whose probe is not fitted stays, left out at resolution, unless picking
              if (named[e["name"]][0].name in wanted if named[e["name"]] else not args.variants)]
    if picked != [v.model_dump() for v in base.eval.variants]:
        sets.append(f"eval.variants={json.dumps(picked)}")
    return sets


def wrapper_entries(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Rows behind the wrapper probe at ``--wrapper-path``, named after its file: the base model, R2D, and with
    ``--probe`` the base model behind the wrapper probe with the intent probe chained after it."""
    path = args.wrapper_path
    if not Path(path).exists():
        raise SystemExit(f"--wrapper-path: {path} does not exist")
    tag = Path(path).name
    rows = [{"name": f"base + wrapper probe ({tag})", "guard": "probe", "args": {"path": path}},
            {"name": f"R2D + wrapper probe ({tag})", "adapter": "r2d", "guard": "probe",
             "args": {"path": path, "then": "r2d", "states": "base"}}]
    if args.probe or args.probe_tune:
        intent = args.probe_path or "{intent_path}"
        name = Path(args.probe_path).name if args.probe_path else "probe_tuned" if args.probe_tune else "probe.json"
        rows.append({"name": f"base + wrapper + intent probe ({tag} + {name})", "guard": "probe",
                     "args": {"path": path, "then": "probe", "then_args": {"path": intent}}, "requires": ["intent"]})
    return rows


def main() -> None:
    args = parse_args()
    os.environ["SAFETHINK_DATA_DIR"] = args.data_dir
    console = Console()
    out = Path(args.out)
    sets = preset_sets(args)
    plan = Plan.from_config(load_pipeline(PRESET, sets), out)
    cfg = plan.settings
    console.log(f"preset {PRESET} with " + " ".join(f"--set '{s}'" for s in sets))

    def progress(what: str, done: int, total: int) -> None:
        if total and done in (total, 1) or not total:
            console.log(f"{what} {done}/{total}" if total else what)

    t0 = time.perf_counter()
    # data: kept as code. The preset's mix declares the sources and retain ratio; the sample sizes (limit,
    # benign_limit) and the near-copy filter of the harmful sources are not fields of a pipeline mix.
    harmful_train = clean_advbench(out, args.data_dir, args.seed, console)
    mixes = {a.mix for a in plan.arms}
    data: dict[tuple[str, str], Path] = {}
    for name in mixes:
        mix = plan.mixes[name]
        methods = tuple(dict.fromkeys(a.method for a in plan.arms if a.mix == name))
        built = build_training_sets(
            cfg, [str(harmful_train)], mix.benign, progress, limit=args.train_harmful,
            benign_limit=args.benign_per_source, data_dir=args.data_dir, check_eval_overlap=True,
            retain_ratio=train_retain_ratio(len(mix.benign), args.benign_per_source, args.train_harmful),
            methods=methods, tag=mix.tag)
        data.update({(name, m): p for m, p in built.items()})
    t_data = time.perf_counter() - t0
    runs = {a.name: train_adapter(cfg, a.method, data[(a.mix, a.method)], out / "runs" / a.name, a.overrides,
                                  progress, preset=a.preset) for a in plan.arms}
    # probe: kept as code (fitted on the public training prompts; the probe stage fits on the seed split)
    if cfg.probe and not args.probe_path:
        fit_probe(cfg, harmful_train, args, console)
    t_train = time.perf_counter() - t0 - t_data
    # the harmful sets asked without attacks: kept as code (eval.attacks applies to every harmful dataset)
    attacked = args.attacked.split(",")
    direct = [{"source": s, "label": "harmful", "name": HARMFUL_SETS[s], "limit": args.eval_limit}
              for s in HARMFUL_SETS if s not in attacked]
    specs = eval_specs(cfg, plan.resolve(plan.datasets), runs, plan.variants, plan.judges)
    if direct:
        specs += eval_specs(replace(cfg, attacks=("none",)), direct, runs, plan.variants, plan.judges)
    eval_dir = run_evaluations(specs, progress)
    t_eval = time.perf_counter() - t0 - t_data - t_train
    rows, attacks, sets_ = summarise(eval_dir, plan.variants)

    from safethink.eval import compute_metrics, load_attempts

    attempts = load_attempts(eval_dir)
    per_set: dict[str, dict[str, Any]] = {}
    for name in HARMFUL_SETS.values():
        m = compute_metrics([a for a in attempts if a.dataset == name])
        for (mo, de, at), rate in m.asr.items():
            if at == "(all)":
                per_set.setdefault(de, {})[name] = rate
    attacked_names = [HARMFUL_SETS[s] for s in attacked]
    out_rows = [{**r.__dict__, "asr_by_set": {h: {"rate": x.rate, "ci": x.ci, "n": x.n}
                                               for h, x in per_set.get(r.variant, {}).items()}} for r in rows]

    def asr_cell(h: str):
        def cell(r: dict[str, Any]) -> str:
            x = r["asr_by_set"].get(h)
            return "-" if x is None else f"{pct(x['rate'], 1)} [{pct(x['ci'][0], 1)}-{pct(x['ci'][1], 1)}]"
        return cell

    columns: dict[str, Any] = {"variant": "variant"}
    for h in HARMFUL_SETS.values():
        columns[f"ASR {h} ({'all attacks' if h in attacked_names else 'direct'})"] = asr_cell(h)
    for s in sets_:
        columns[f"refused: {s}"] = lambda r, s=s: pct(r["over_refusal"].get(s), 1)
    columns["benign answered"] = lambda r: pct(r["benign_answer"], 1)
    lim, blim = args.eval_limit, args.benign_limit or args.eval_limit
    record("defence", out_rows, out=args.json, columns=columns,
           title=f"defence on public data ({args.model}; {lim} harmful / {blim} benign prompts per set, "
                 f"{args.realistic_limit or 'all'} realistic; {len(attacks)} attacks on {', '.join(attacked_names)})",
           seconds={"data": t_data, "train": t_train, "eval": t_eval}, attacks=attacks, sets=sets_,
           preset=PRESET, pipeline_sets=sets)
    print(f"\nASR per attack ({', '.join(attacked_names)})\n")
    print(markdown_table([{"attack": a, **{r.variant: pct(r.asr.get(a), 1) for r in rows}} for a in attacks]))
    console.print(f"report: safethink report {eval_dir}")


def train_retain_ratio(benign_sources: int, benign_per_source: int, train_harmful: int) -> float:
    """Retain records per refusal record that keep every sampled benign prompt: each harmful prompt brings itself
    and one evolved rewrite."""
    return benign_sources * benign_per_source / (2 * train_harmful)


def clean_advbench(out: Path, data_dir: str, seed: int, console: Console) -> Path:
    """AdvBench without its near copies of evaluation prompts, as a JSONL file in ``out``."""
    dest = out / "advbench_train.jsonl"
    if dest.is_file():
        return dest
    adv = load_prompts("advbench", label="harmful", data_dir=data_dir)
    near = {d.train_id for d in find_near_duplicates(adv, load_eval_prompts(data_dir=data_dir), threshold=0.6)}
    console.log(f"AdvBench: {len(near)} of {len(adv)} prompts dropped as near copies of evaluation prompts")
    write_jsonl(dest, [{"id": r.id, "prompt": r.prompt, "label": "harmful", "category": r.category}
                       for r in adv if r.id not in near])
    return dest


def fit_probe(cfg: QuickstartConfig, harmful_train: Path, args: argparse.Namespace, console: Console) -> Path:
    """The probe guard's classifier (cached in ``out/probe.json``, a tuned probe in ``out/probe_tuned``) on the
    base model's states of ``--probe-harmful`` AdvBench prompts (default: those trained on) and
    ``--probe-benign`` benign prompts per source, each under the preset's ``probes.intent.attacks``, and its
    ``probes.negatives`` requests as sent (fitted again when the saved probe took other negatives). Kept as code:
    the probe stage of the pipeline fits on the seed split; a pipeline config cannot name other probe sources."""
    from safethink.models import load_model
    from safethink.probes import fit_probe as fit_probe_on_sources
    from safethink.probes import load_probe

    dest = cfg.probe_path
    negatives = list(cfg.negatives)
    if cfg.probe_saved and load_probe(dest).metrics.get("fitted_on", {}).get("negatives", []) == negatives:
        return dest
    attacks = list(cfg.probe_attacks)
    out = cfg.out / "probe_sources"
    sources = {"harmful": [(str(harmful_train), args.probe_harmful or args.train_harmful)],
               "benign": [(s, args.probe_benign) for s in ("builtin:twins", "builtin:borderline", "builtin:benign",
                                                            "harmless")]}
    files: dict[str, list[str]] = {"harmful": [], "benign": []}
    for label, srcs in sources.items():
        for i, (src, limit) in enumerate(srcs):
            rows = load_prompts(src, label=label, limit=limit, seed=cfg.seed, data_dir=args.data_dir)
            path = out / f"{label}_{i}.jsonl"
            write_jsonl(path, [{"id": r.id, "prompt": r.prompt, "label": label} for r in rows])
            files[label].append(str(path))
    t = time.perf_counter()
    probe = fit_probe_on_sources(load_model(cfg.model), files["harmful"], files["benign"], attacks=attacks,
                                 seed=cfg.seed, tune=cfg.probe_tune, forms_per_request=args.probe_forms_per_request,
                                 negatives=negatives, data_dir=args.data_dir)
    probe.save(dest)
    console.log(f"probe: layers {probe.layers}, {'validation' if cfg.probe_tune else 'CV'} AUC "
                f"{probe.metrics['auc']:.3f}, threshold {probe.threshold:.3f}, route {probe.route_threshold}, "
                f"{time.perf_counter() - t:.0f} s")
    return dest


if __name__ == "__main__":
    main()
