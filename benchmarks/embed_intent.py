"""Can a sentence-embedding intent classifier separate JailbreakBench harmful requests from their benign twins?

The same training and evaluation prompts as ``benchmarks/plain_forms.py`` (AdvBench + safethink harmful seeds
against safethink's twins, safe-but-scary, ordinary, Alpaca and frame twins), embedded with the bundled
all-MiniLM-L6-v2 instead of the target model's hidden states, and a logistic regression at a few strengths.
Reports cross-validated AUC, AUC of JBB harmful (plain, past tense, misspelt) against JBB benign, and what a
threshold at 5% of the training benign requests (out of fold) flags on each evaluation set. No generation: the
flag rates are the classifier's alone (a guard refuses what it flags, on top of the model's own refusals).
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
from plain_forms import EVAL_HARMFUL, prompt_sets  # noqa: E402

from safethink.io import atomic_write_text  # noqa: E402
from safethink.judges._classifier import load_embedder  # noqa: E402

STRENGTHS = (0.3, 1.0, 3.0, 10.0)


def main() -> None:
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import cross_val_predict

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--out", default="runs/embed_intent", help="Working directory (the cleaned AdvBench copy).")
    ap.add_argument("--json", default="benchmarks/results/embed_intent.json")
    args = ap.parse_args()
    console = Console(width=200)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    sets = prompt_sets(out, args.data_dir, console)
    embedder = load_embedder()
    emb = {n: embedder.encode(ps, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                              show_progress_bar=False) for n, ps in sets.items()}
    x = np.concatenate([emb["train_h"], emb["train_b"]])
    y = np.array([1] * len(emb["train_h"]) + [0] * len(emb["train_b"]))
    evals = [*EVAL_HARMFUL, "jbb_b", "xstest", "alpaca_val", "cal_twins"]
    table = Table(title="MiniLM intent classifier (logistic regression on all-MiniLM-L6-v2 embeddings)")
    for col in ("C", "CV AUC", "AUC JBB plain / past / misspelt vs JBB benign", "threshold",
                *[f"flagged: {n}" for n in evals]):
        table.add_column(col, justify="right")
    rows = []
    for c in STRENGTHS:
        clf = LogisticRegression(C=c, max_iter=2000)
        oof = cross_val_predict(clf, x, y, cv=5, method="predict_proba")[:, 1]
        cut = float(np.quantile(oof[y == 0], 0.95))
        clf.fit(x, y)
        score = {n: clf.predict_proba(emb[n])[:, 1] for n in evals}
        aucs = [float(roc_auc_score([1] * len(score[h]) + [0] * len(score["jbb_b"]),
                                    np.concatenate([score[h], score["jbb_b"]]))) for h in EVAL_HARMFUL]
        flagged = {n: float((score[n] >= cut).mean()) for n in evals}
        r = {"C": c, "cv_auc": float(roc_auc_score(y, oof)), "auc_jbb": dict(zip(EVAL_HARMFUL, aucs)),
             "threshold": cut, "flagged": flagged}
        rows.append(r)
        table.add_row(f"{c:g}", f"{r['cv_auc']:.3f}", " / ".join(f"{a:.3f}" for a in aucs), f"{cut:.3f}",
                      *[f"{100 * flagged[n]:.0f}%" for n in evals])
    console.print(table)
    result = {"benchmark": "embed_intent", "date": date.today().isoformat(), "machine": machine(),
              "command": " ".join(["python", "benchmarks/embed_intent.py", *sys.argv[1:]]),
              "sizes": {n: len(p) for n, p in sets.items()}, "rows": rows, "seconds": time.perf_counter() - t0}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.json), json.dumps(result, indent=1))
    console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
