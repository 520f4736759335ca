"""How well do request probes tell harmful from benign requests the quickstart held out? A classifier-only
comparison, without generating.

Each ``--probe`` (a linear probe file from ``safethink probe fit``, or a tuned probe directory from
``safethink probe fit --tune``) scores the held-out harmful prompts under each evaluation attack (template
seed 0, as the evaluation draws them) and the held-out benign sets as they are. Reported per probe, at its
own threshold: the share flagged of each set, and the held-out AUC of harmful (all attacks) against benign
(all sets). Fit the probes on the split's training and spare files only, never on its ``*_eval`` files:

    safethink probe fit --tune --harmful runs/qs/splits/harmful_train.jsonl \\
        --harmful runs/qs/splits/harmful_spare.jsonl --benign runs/qs/splits/twins_train.jsonl ... \\
        --attacks none,prefix-injection,refusal-suppression,past-tense --out runs/qs/probe_tuned
    python benchmarks/classifier.py --splits runs/qs/splits --probe runs/qs/probe_tuned --probe runs/qs/probe.json

Prints the table and writes benchmarks/results/classifier.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

from rich.console import Console
from rich.table import Table

from safethink.data import load_prompts
from safethink.guard import TunedProbe, load_probe
from safethink.models import load_model
from safethink.quickstart import DEFAULT_ATTACKS
from safethink.train import attacked_examples

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine  # noqa: E402
from probe import BENIGN_SETS  # noqa: E402  (held-out set name -> split file stem)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--splits", default="runs/qs/splits")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--probe", action="append", required=True,
                    help="A probe to score the held-out forms with: a linear probe file or a tuned probe directory "
                         "(repeatable; each at its own threshold).")
    ap.add_argument("--attacks", default=",".join(DEFAULT_ATTACKS), help="Evaluation attacks (comma list).")
    ap.add_argument("--json", default="benchmarks/results/classifier.json")
    args = ap.parse_args()

    import numpy as np
    from sklearn.metrics import roc_auc_score

    console = Console()
    d = Path(args.splits)
    t0 = time.perf_counter()
    ev_h = load_prompts(str(d / "harmful_eval.jsonl"))
    attacks = args.attacks.split(",")
    held = {a: attacked_examples(ev_h, [a], seed=0)[0] for a in attacks}
    benign = {s: attacked_examples(load_prompts(str(d / f"{n}_eval.jsonl")), ["none"], seed=0)[0]
              for s, n in BENIGN_SETS.items()}
    base = load_model(args.model)
    rows = {}
    for path in args.probe:
        probe = load_probe(path)
        kind = "tuned" if isinstance(probe, TunedProbe) else "linear"
        name = f"{kind} probe ({Path(path).name}, layers {probe.layers})"
        thr = probe.threshold
        score = lambda cs: np.array(probe.score(base, cs))  # noqa: E731
        t1 = time.perf_counter()
        sh = {a: score(cs) for a, cs in held.items()}
        sb = {s: score(cs) for s, cs in benign.items()}
        all_h, all_b = np.concatenate(list(sh.values())), np.concatenate(list(sb.values()))
        rows[name] = {"path": path, "threshold": thr, "fit_metrics": probe.metrics,
                      "auc": float(roc_auc_score(np.r_[np.ones(len(all_h)), np.zeros(len(all_b))], np.r_[all_h, all_b])),
                      **{a: float((v >= thr).mean()) for a, v in sh.items()},
                      **{s: float((v >= thr).mean()) for s, v in sb.items()},
                      "mean harmful": float(np.mean([(v >= thr).mean() for v in sh.values()])),
                      "score_seconds": time.perf_counter() - t1}
    pct = lambda v: f"{100 * v:.0f}%"  # noqa: E731
    table = Table(title=f"held out: {len(ev_h)} harmful per attack, "
                        + ", ".join(f"{len(v)} {s}" for s, v in benign.items()))
    table.add_column("probe", style="bold")
    for col in ("threshold", "AUC", *attacks, "mean harmful", *BENIGN_SETS):
        table.add_column(col, justify="right")
    for name, r in rows.items():
        table.add_row(name, f"{r['threshold']:.3f}", f"{r['auc']:.3f}", *[pct(r[a]) for a in attacks],
                      pct(r["mean harmful"]), *[pct(r[s]) for s in BENIGN_SETS])
    console.print(table)
    result = {"date": date.today().isoformat(), "machine": machine(),
              "command": "python benchmarks/classifier.py " + " ".join(sys.argv[1:]),
              "rows": rows, "seconds": time.perf_counter() - t0}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))
    console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
