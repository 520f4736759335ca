"""The probe guard's classifier on the quickstart split, without generating: how many held-out harmful
requests it flags under each attack, and how many held-out benign ones (twins, ordinary, safe-but-scary).

The probe is fitted on the training split only (harmful, twins, ordinary and safe-but-scary training
prompts), each under the fitted attacks with a different template seed from the evaluation's. Held-out
harmful requests are scored under each evaluation attack (seed 0, as the evaluation draws them), benign
ones as they are. Two more rows test generalisation:

- leave-one-attack-out: for each attack, a probe fitted without that attack's forms, scored on the
  held-out requests under it (an attack template the probe has never seen);
- no attacks: a probe fitted on the plain requests only.

    python benchmarks/probe.py --splits runs/quickstart/splits

Prints the table and writes benchmarks/results/probe.json.
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
from safethink.guard import fit_probe_on_states, prompt_states
from safethink.models import load_model
from safethink.quickstart import DEFAULT_ATTACKS
from safethink.train import attacked_examples

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine  # noqa: E402

BENIGN_SETS = {"benign twins": "twins", "ordinary": "benign", "safe-but-scary": "borderline"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--splits", default="runs/quickstart/splits", help="A quickstart's splits directory.")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--adapter", default=None)
    ap.add_argument("--attacks", default=",".join(DEFAULT_ATTACKS), help="Evaluation attacks (comma list).")
    ap.add_argument("--fit-attacks", default=None, help="Attacks the probe is fitted under (default: --attacks).")
    ap.add_argument("--max-fpr", type=float, default=0.05)
    ap.add_argument("--c", type=float, default=0.1)
    ap.add_argument("--json", default="benchmarks/results/probe.json")
    args = ap.parse_args()

    import numpy as np

    console = Console()
    d = Path(args.splits)
    attacks = args.attacks.split(",")
    fit_attacks = (args.fit_attacks or args.attacks).split(",")
    model = load_model(args.model, adapter=args.adapter)
    t0 = time.perf_counter()

    def records(name: str) -> list:
        return load_prompts(str(d / f"{name}.jsonl"))

    tr_h = records("harmful_train")
    tr_b = [r for n in ("twins_train", "benign_train", "borderline_train") for r in records(n)]
    states, labels, groups, forms = [], [], [], []
    for recs, label in ((tr_h, 1), (tr_b, 0)):
        for a in fit_attacks:
            convs, grp = attacked_examples(recs, [a], seed=1)
            states.append(prompt_states(model, convs))
            labels += [label] * len(convs)
            groups += grp
            forms += [a] * len(convs)
    x = np.concatenate(states)
    layer_ids = list(range(x.shape[1]))
    y, forms_a = np.array(labels), np.array(forms)
    console.log(f"training states: {x.shape} in {time.perf_counter() - t0:.0f}s")

    def fit(mask, candidates=None):
        return fit_probe_on_states(x[mask], y[mask], [g for g, m in zip(groups, mask) if m], layer_ids=layer_ids,
                                   candidates=candidates or layer_ids[1:], model=model.spec, c=args.c,
                                   max_fpr=args.max_fpr)

    t1 = time.perf_counter()
    probe = fit(np.ones(len(y), dtype=bool))
    fit_seconds = time.perf_counter() - t1
    layer = probe.layer
    console.log(f"probe: layer {layer}, out-of-fold AUC {probe.metrics['auc']:.3f}, threshold {probe.threshold:.3f} "
                f"({fit_seconds:.0f}s)")

    ev_h = records("harmful_eval")
    held = {a: prompt_states(model, attacked_examples(ev_h, [a], seed=0)[0], layers=[layer])[:, 0] for a in attacks}
    benign = {s: prompt_states(model, attacked_examples(records(f"{n}_eval"), ["none"], seed=0)[0], layers=[layer])[:, 0]
              for s, n in BENIGN_SETS.items()}

    def rates(p) -> dict:
        return {**{a: float((p.probabilities(v) >= p.threshold).mean()) for a, v in held.items()},
                **{s: float((p.probabilities(v) >= p.threshold).mean()) for s, v in benign.items()}}

    rows = {"fitted under all attacks": rates(probe)}
    plain = fit(forms_a == "none", candidates=[layer])
    rows["fitted on plain requests only"] = rates(plain)
    loao = {}
    for a in attacks:
        if a == "none" or a not in fit_attacks:
            continue
        p = fit(forms_a != a, candidates=[layer])
        loao[a] = rates(p)
    rows["leave-one-attack-out"] = {a: r[a] for a, r in loao.items()} | {
        s: float(np.mean([r[s] for r in loao.values()])) for s in BENIGN_SETS} if loao else {}

    pct = lambda v: "-" if v is None else f"{100 * v:.0f}%"  # noqa: E731
    table = Table(title=f"probe flags ({args.model}, layer {layer}; held out: {len(ev_h)} harmful per attack, "
                        + ", ".join(f"{len(v)} {s}" for s, v in benign.items()) + ")")
    table.add_column("probe", style="bold")
    for a in attacks:
        table.add_column(f"harmful {a}", justify="right")
    for s in BENIGN_SETS:
        table.add_column(f"{s} flagged", justify="right")
    for name, r in rows.items():
        table.add_row(name, *[pct(r.get(a)) for a in attacks], *[pct(r.get(s)) for s in BENIGN_SETS])
    console.print(table)
    result = {
        "date": date.today().isoformat(), "machine": machine(),
        "command": "python benchmarks/probe.py " + " ".join(sys.argv[1:]),
        "layer": layer, "threshold": probe.threshold, "metrics": probe.metrics, "fit_attacks": fit_attacks,
        "rows": rows, "seconds": time.perf_counter() - t0,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))
    console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
