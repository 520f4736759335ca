"""Did SCoT training teach the rule verdicts? Yes/No log-odds of a SCoT model on harmful vs benign twins.

For every prompt, the model writes its restatement line; then, with every rule line teacher-forced to
"No", ``safethink.guard.verdict_scores`` reads ``log p(Yes) - log p(No)`` at each rule's verdict position
(the quantity the ``scot-verdict`` guard thresholds), and at the conclusion ``log p(violates) - log p(is)``
after "Therefore, the request". If training taught the decision, harmful requests
score high on their rule and their benign twins (same topic, benign intent) score low: the table gives
the ROC AUC of the highest rule score and of the conclusion score, harmful vs twins, on prompts seen in training and held out.
0.5 means the verdict lines carry no information about the request.

    python benchmarks/scot_verdicts.py --run runs/qs/runs/scot --splits runs/qs/splits

Prints the table and writes benchmarks/results/scot_verdicts.json.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine  # noqa: E402


def auc(pos: list[float], neg: list[float]) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def read_prompts(path: Path, limit: int) -> list[str]:
    rows = [json.loads(line)["prompt"] for line in path.read_text().splitlines() if line.strip()]
    return rows[:limit]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="A SCoT run directory (adapter or full model).")
    ap.add_argument("--splits", required=True, help="A quickstart splits/ folder (harmful/twins, train and eval).")
    ap.add_argument("--model", default="smollm2-135m", help="Base model of the run (for an adapter).")
    ap.add_argument("--limit", type=int, default=40, help="Prompts per set.")
    ap.add_argument("--json", default="benchmarks/results/scot_verdicts.json")
    args = ap.parse_args()

    from safethink.guard import GUARDS
    from safethink.models import load_model

    run, splits = Path(args.run), Path(args.splits)
    full = (run / "config.json").is_file() and not (run / "adapter_config.json").is_file()
    model = load_model(f"hf:{run}") if full else load_model(args.model, adapter=str(run))
    guard = GUARDS.create("scot-verdict")  # its restatement stage and scores, without a decision
    rules = [rid for rid, _ in guard.rules()]
    scores: dict[str, list] = {}
    t0 = time.perf_counter()
    for name in ("harmful_train", "twins_train", "harmful_eval", "twins_eval"):
        prompts = read_prompts(splits / f"{name}.jsonl", args.limit)
        _, scores[name] = guard.score(model, [[{"role": "user", "content": p}] for p in prompts], batch_size=16)
    seconds = time.perf_counter() - t0

    table = Table(title=f"SCoT verdict log-odds: harmful vs benign twins ({run})")
    table.add_column("prompts")
    table.add_column("AUC max rule", justify="right")
    table.add_column("AUC conclusion", justify="right")
    table.add_column("mean max: harmful", justify="right")
    table.add_column("mean max: twins", justify="right")
    table.add_column("share max > 0: harmful / twins", justify="right")
    table.add_column("conclusion > 0: harmful / twins", justify="right")
    rows = []
    for part in ("train", "eval"):
        hs, ts = scores[f"harmful_{part}"], scores[f"twins_{part}"]
        h, t = [max(s.rules) for s in hs], [max(s.rules) for s in ts]
        hc, tc = [s.conclusion for s in hs], [s.conclusion for s in ts]
        per_rule = {r: auc([s.rules[k] for s in hs], [s.rules[k] for s in ts]) for k, r in enumerate(rules)}
        row = {"part": part, "n_harmful": len(h), "n_twins": len(t), "auc_max": auc(h, t),
               "auc_conclusion": auc(hc, tc), "reject_harmful": sum(x > 0 for x in hc) / len(hc),
               "reject_twins": sum(x > 0 for x in tc) / len(tc),
               "mean_max_harmful": sum(h) / len(h), "mean_max_twins": sum(t) / len(t),
               "yes_harmful": sum(x > 0 for x in h) / len(h), "yes_twins": sum(x > 0 for x in t) / len(t),
               "auc_per_rule": per_rule}
        rows.append(row)
        table.add_row("seen in training" if part == "train" else "held out", f"{row['auc_max']:.3f}",
                      f"{row['auc_conclusion']:.3f}",
                      f"{row['mean_max_harmful']:.2f}", f"{row['mean_max_twins']:.2f}",
                      f"{100 * row['yes_harmful']:.0f}% / {100 * row['yes_twins']:.0f}%",
                      f"{100 * row['reject_harmful']:.0f}% / {100 * row['reject_twins']:.0f}%")
    Console().print(table)
    result = {"date": date.today().isoformat(), "machine": machine(),
              "command": "python benchmarks/scot_verdicts.py " + " ".join(sys.argv[1:]),
              "run": str(run), "rules": rules, "seconds": seconds, "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
