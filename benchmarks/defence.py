"""Defence quality on public data: the quickstart pipeline, trained and evaluated on public sets.

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

    python benchmarks/defence.py --data-dir ../shared/data --out runs/defence [--train-harmful 60] [--eval-limit 10] [--probe]

Prints the table and writes benchmarks/results/defence.json; stages are cached in --out.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from _record import RESULTS, markdown_table, pct, record
from safethink.data import find_near_duplicates, load_eval_prompts, load_prompts
from safethink.io import write_jsonl
from safethink.pipeline import (
    REALISTIC_TEST, REALISTIC_TRAIN, TRANSFORM_ATTACKS, QuickstartConfig, Variant, build_training_sets, eval_specs,
    run_evaluations, summarise, train_adapters,
)

HARMFUL_SETS = {"jbb-harmful": "JBB harmful", "harmbench": "HarmBench val", "strongreject": "StrongREJECT"}
BENIGN_SETS = {"jbb-benign": "JBB benign", "xstest": "XSTest safe", "harmless-val": "Alpaca (held out)",
               REALISTIC_TEST: "realistic (held out)"}
"""One-line benign sets, and safethink's held-out realistic requests (pasted material, personas, earlier turns)."""



def main() -> None:
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
    ap.add_argument("--json", default=str(RESULTS / "defence.json"))
    args = ap.parse_args()

    import os

    os.environ["SAFETHINK_DATA_DIR"] = args.data_dir
    console = Console()
    out = Path(args.out)
    cfg = QuickstartConfig(out=out, model=args.model, seed=args.seed, attacks=tuple(args.attacks.split(",")),
                           max_new_tokens=args.max_new_tokens, probe=args.probe or args.probe_tune,
                           probe_tune=args.probe_tune, probe_wrapper=False)  # its wrapper rows: --wrapper-path
    all_variants = cfg.variants()
    if args.probe_path:
        if not cfg.probe:
            raise SystemExit("--probe-path needs --probe")
        if not Path(args.probe_path).exists():
            raise SystemExit(f"--probe-path: {args.probe_path} does not exist")
        # named after the probe, so the results store never mixes its answers with another probe's
        tag = Path(args.probe_path).name
        all_variants = tuple(replace(v, name=f"{v.name} ({tag})", guard_args={**v.guard_args, "path": args.probe_path})
                             if v.guard == "probe" else v for v in all_variants)
    if args.wrapper_path:
        all_variants = (*all_variants, *wrapper_variants(cfg, args))
    wanted = args.variants.split(",") if args.variants else [v.name for v in all_variants]
    unknown = set(wanted) - {v.name for v in all_variants}
    if unknown:
        raise SystemExit(f"--variants: unknown {sorted(unknown)}; known: {[v.name for v in all_variants]}")
    variants = tuple(v for v in all_variants if v.name in wanted)
    attacked = args.attacked.split(",")

    def progress(what: str, done: int, total: int) -> None:
        if total and done in (total, 1) or not total:
            console.log(f"{what} {done}/{total}" if total else what)

    t0 = time.perf_counter()
    harmful_train = clean_advbench(out, args.data_dir, args.seed, console)
    data = build_training_sets(
        cfg, [str(harmful_train)], ["builtin:twins", "builtin:borderline", "harmless"], progress,
        limit=args.train_harmful, benign_limit=args.benign_per_source, data_dir=args.data_dir,
        check_eval_overlap=True, retain_ratio=3 * args.benign_per_source / (2 * args.train_harmful),
    )
    t_data = time.perf_counter() - t0
    runs = train_adapters(cfg, data, progress)
    if cfg.probe and not args.probe_path:
        fit_probe(cfg, harmful_train, args, console)
    t_train = time.perf_counter() - t0 - t_data
    lim, blim = args.eval_limit, args.benign_limit or args.eval_limit

    def ds(src: str, label: str, names: dict[str, str]) -> dict[str, Any]:
        limit = lim if label == "harmful" else args.realistic_limit if src == REALISTIC_TEST else blim
        return {"source": src, "label": label, "name": names[src], **({"limit": limit} if limit else {})}

    under_attack = [ds(s, "harmful", HARMFUL_SETS) for s in attacked]
    direct = ([ds(s, "harmful", HARMFUL_SETS) for s in HARMFUL_SETS if s not in attacked]
              + [ds(s, "benign", BENIGN_SETS) for s in BENIGN_SETS])
    judges = [{"name": "default", "primary": True}, {"name": "keyword-gcg"}]
    plain = replace(cfg, attacks=("none",))
    specs = [*eval_specs(cfg, under_attack, runs, variants, judges=judges),
             *eval_specs(plain, direct, runs, variants, judges=judges)]
    eval_dir = run_evaluations(specs, progress)
    t_eval = time.perf_counter() - t0 - t_data - t_train
    rows, attacks, sets = summarise(eval_dir, variants)

    from safethink.eval import compute_metrics, load_attempts

    attempts = load_attempts(eval_dir)
    per_set: dict[str, dict[str, Any]] = {}
    for name in [HARMFUL_SETS[s] for s in HARMFUL_SETS]:
        m = compute_metrics([a for a in attempts if a.dataset == name])
        for (mo, de, at), rate in m.asr.items():
            if at == "(all)":
                per_set.setdefault(de, {})[name] = rate
    harm_names = [HARMFUL_SETS[s] for s in HARMFUL_SETS]
    attacked_names = [HARMFUL_SETS[s] for s in attacked]
    out_rows = [{**r.__dict__, "asr_by_set": {h: {"rate": x.rate, "ci": x.ci, "n": x.n}
                                               for h, x in per_set.get(r.variant, {}).items()}} for r in rows]

    def asr_cell(h: str):
        def cell(r: dict[str, Any]) -> str:
            x = r["asr_by_set"].get(h)
            return "-" if x is None else f"{pct(x['rate'], 1)} [{pct(x['ci'][0], 1)}-{pct(x['ci'][1], 1)}]"
        return cell

    columns: dict[str, Any] = {"variant": "variant"}
    for h in harm_names:
        columns[f"ASR {h} ({'all attacks' if h in attacked_names else 'direct'})"] = asr_cell(h)
    for s in sets:
        columns[f"refused: {s}"] = lambda r, s=s: pct(r["over_refusal"].get(s), 1)
    columns["benign answered"] = lambda r: pct(r["benign_answer"], 1)
    n_real = args.realistic_limit or "all"
    record("defence", out_rows, out=args.json, columns=columns,
           title=f"defence on public data ({args.model}; {lim} harmful / {blim} benign prompts per set, {n_real} "
                 f"realistic; {len(attacks)} attacks on {', '.join(attacked_names)})",
           seconds={"data": t_data, "train": t_train, "eval": t_eval}, attacks=attacks, sets=sets)
    print(f"\nASR per attack ({', '.join(attacked_names)})\n")
    print(markdown_table([{"attack": a, **{r.variant: pct(r.asr.get(a), 1) for r in rows}} for a in attacks]))
    console.print(f"report: safethink report {eval_dir}")


def wrapper_variants(cfg: QuickstartConfig, args: argparse.Namespace) -> list[Variant]:
    """Rows behind the wrapper probe at ``--wrapper-path``, named after its file: the base model, R2D, and with
    ``--probe`` the base model behind the wrapper probe with the intent probe chained after it."""
    path = args.wrapper_path
    if not Path(path).exists():
        raise SystemExit(f"--wrapper-path: {path} does not exist")
    tag = Path(path).name
    rows = [Variant(f"base + wrapper probe ({tag})", None, "probe", {"path": path}),
            Variant(f"R2D + wrapper probe ({tag})", "r2d", "probe", {"path": path, "then": "r2d", "states": "base"})]
    if cfg.probe:
        intent = args.probe_path or str(cfg.probe_path)
        rows.append(Variant(f"base + wrapper + intent probe ({tag} + {Path(intent).name})", None, "probe",
                            {"path": path, "then": "probe", "then_args": {"path": intent}}))
    return rows


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
    ``--probe-benign`` benign prompts per source, each under the probe attacks, and the ``--probe-negatives``
    requests as sent (fitted again when the saved probe took other negatives)."""
    from safethink.models import load_model
    from safethink.probes import fit_probe as fit_probe_on_sources
    from safethink.probes import load_probe

    dest = cfg.probe_path
    negatives = [s for s in args.probe_negatives.split(",") if s]
    if cfg.probe_saved and load_probe(dest).metrics.get("fitted_on", {}).get("negatives", []) == negatives:
        return dest
    attacks = (args.probe_attacks or args.attacks).split(",")
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
