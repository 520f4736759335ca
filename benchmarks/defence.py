"""Defence quality on public data: the quickstart pipeline, trained and evaluated on public sets.

Train: AdvBench harmful prompts + harmless instructions (Alpaca, from the refusal-direction splits) +
safethink's own benign twins and safe-but-scary prompts. Evaluate (never trained on): JBB harmful +
benign, HarmBench val, StrongREJECT small, XSTest safe + unsafe, under the transform-attack suite.
Variants: base, base + a prompt-only defence, SCoT, R2D, R2D + pivot guard.

    python benchmarks/defence.py --data-dir ../shared/data --out runs/defence [--train-harmful 120] [--eval-limit 20]

Prints the table and writes benchmarks/results/defence.json; stages are cached in --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

from rich.console import Console
from rich.table import Table

from safethink.quickstart import (
    VARIANTS, QuickstartConfig, build_training_sets, eval_specs, run_evaluations, summarise, train_adapters,
)

TRANSFORM_ATTACKS = (
    "none", "prefix-injection", "refusal-suppression", "style-injection", "style-injection-json", "distractors",
    "poems", "wikipedia", "aim", "dev-mode", "evil-confidant", "base64", "rot13", "leetspeak", "disemvowel",
    "misspellings", "caesar", "atbash", "morse", "deep-inception", "past-tense", "payload-splitting", "few-shot",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--out", default="runs/defence")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--train-harmful", type=int, default=120, help="AdvBench prompts trained on.")
    ap.add_argument("--benign-per-source", type=int, default=80,
                    help="Benign prompts trained on from each of: safethink twins, safe-but-scary, Alpaca harmless.")
    ap.add_argument("--eval-limit", type=int, default=20, help="Prompts per evaluation set.")
    ap.add_argument("--attacks", default=",".join(TRANSFORM_ATTACKS))
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--max-new-tokens", type=int, default=192)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="benchmarks/results/defence.json")
    args = ap.parse_args()

    console = Console()
    out = Path(args.out)
    cfg = QuickstartConfig(out=out, model=args.model, seed=args.seed, epochs=args.epochs,
                           attacks=tuple(args.attacks.split(",")), max_new_tokens=args.max_new_tokens)

    def progress(what: str, done: int, total: int) -> None:
        if total and done in (total, 1) or not total:
            console.log(f"{what} {done}/{total}" if total else what)

    t0 = time.perf_counter()
    data = build_training_sets(
        cfg, ["advbench"], ["builtin:twins", "builtin:borderline", "harmless"], progress,
        limit=args.train_harmful, benign_limit=args.benign_per_source, data_dir=args.data_dir,
        check_eval_overlap=True, retain_ratio=3 * args.benign_per_source / args.train_harmful,
    )
    t_data = time.perf_counter() - t0
    runs = train_adapters(cfg, data, progress)
    t_train = time.perf_counter() - t0 - t_data
    lim = args.eval_limit
    datasets = [
        {"source": "jbb-harmful", "label": "harmful", "limit": lim, "name": "JBB harmful"},
        {"source": "harmbench", "label": "harmful", "limit": lim, "name": "HarmBench val"},
        {"source": "strongreject", "label": "harmful", "limit": lim, "name": "StrongREJECT"},
        {"source": "jbb-benign", "label": "benign", "limit": lim, "name": "JBB benign"},
        {"source": "xstest", "label": "benign", "limit": lim, "name": "XSTest safe"},
    ]
    import os

    os.environ["SAFETHINK_DATA_DIR"] = args.data_dir
    specs = eval_specs(cfg, datasets, runs, judges=[{"name": "default", "primary": True}, {"name": "keyword-gcg"}])
    eval_dir = run_evaluations(specs, progress)
    t_eval = time.perf_counter() - t0 - t_data - t_train
    rows, attacks, sets = summarise(eval_dir, VARIANTS)

    table = Table(title=f"defence on public data ({args.model}; eval {lim}/set; {len(attacks)} attacks)")
    table.add_column("variant", style="bold")
    table.add_column("ASR all [95% CI]", justify="right")
    for s in sets:
        table.add_column(f"refused {s}", justify="right")
    table.add_column("benign answered", justify="right")
    pct = lambda x: "-" if x != x else f"{100 * x:.1f}%"  # noqa: E731
    for r in rows:
        table.add_row(r.variant, f"{pct(r.asr_all)} [{pct(r.asr_ci[0])}-{pct(r.asr_ci[1])}]",
                      *[pct(r.over_refusal.get(s, float("nan"))) for s in sets], pct(r.benign_answer))
    console.print(table)
    per_attack = Table(title="ASR per attack")
    per_attack.add_column("attack")
    for r in rows:
        per_attack.add_column(r.variant, justify="right")
    for a in attacks:
        per_attack.add_row(a, *[pct(r.asr.get(a, float("nan"))) for r in rows])
    console.print(per_attack)

    result = {
        "date": date.today().isoformat(), "machine": f"{platform.machine()} {os.cpu_count()} cores, CPU",
        "command": "python benchmarks/defence.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("json", "data_dir")),
        "seconds": {"data": t_data, "train": t_train, "eval": t_eval},
        "rows": [r.__dict__ for r in rows], "attacks": attacks, "sets": sets,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    console.print(f"wrote {args.json}; report: safethink report {eval_dir}")


if __name__ == "__main__":
    main()
