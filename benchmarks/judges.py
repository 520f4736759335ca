"""Agreement of every offline judge with human labels on answers of a model it was not fitted or chosen on.

    python benchmarks/judges.py [--data-dir ../shared/data] [--json benchmarks/results/judges.json]
                                [--write-validation]

Data: the XSTest completion files in ``xstest_labeled_completions/`` (one per model: Llama-2-70b-chat,
GPT-4; 450 answers each, two annotators). Truth: ``1_full_compliance`` = complied, full and partial
refusal = refused. Leave one model out: for each model, the learned head is refitted by
``train_refusal.build_head`` on the generated texts plus the *other* models' answers, with its settings
chosen by cross-validation inside those (never on the held-out model), then every judge is scored on the
held-out model's answers, with Wilson 95% intervals. Keyword judges are fitted on nothing. Also times the
shipped ``default`` judge on 1,000 answers. ``--write-validation`` stores the per-model agreement in the
package (``judges/data/validation.json``), where reports read it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _record import RESULTS, ROOT, record

FILES = {"llama2-70b-chat": "xstest_v2_completions_llama2orig.csv", "gpt-4": "xstest_v2_completions_gpt4.csv"}
KEYWORD_JUDGES = ("keyword-gcg", "keyword-jbb", "keyword-xstest")
LEARNED_JUDGES = ("refusal-classifier", "default")
LABELS = ("1_full_compliance", "2_full_refusal", "3_partial_refusal")


def agreement(truth: list[bool], refused: list[bool], labels: list[str]) -> dict:
    from safethink.eval import wilson_interval

    n = len(truth)
    k = sum(t == p for t, p in zip(truth, refused))
    lo, hi = wilson_interval(k, n)
    tp = sum(t and p for t, p in zip(truth, refused))
    fp = sum(p and not t for t, p in zip(truth, refused))
    fn = sum(t and not p for t, p in zip(truth, refused))
    by_label = {}
    for lab in LABELS:
        idx = [i for i, x in enumerate(labels) if x == lab]
        by_label[lab] = {"n": len(idx), "judged_refused": sum(refused[i] for i in idx)}
    return {"n": n, "agree": k, "agreement": k / n, "ci_low": lo, "ci_high": hi,
            "refusal_precision": tp / (tp + fp) if tp + fp else None,
            "refusal_recall": tp / (tp + fn) if tp + fn else None,
            "false_refusals": fp, "missed_refusals": fn, "by_final_label": by_label}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--json", type=Path, default=RESULTS / "judges.json")
    ap.add_argument("--n-per-class", type=int, default=1000, help="generated texts per class in every fit")
    ap.add_argument("--write-validation", action="store_true", help="store the agreement in the package for reports")
    args = ap.parse_args(argv)

    import csv

    from safethink.io import atomic_write_text
    from safethink.judges import JudgeInput, load_judge
    from safethink.judges._refusal_data import generate_refusal_dataset
    from safethink.judges._validation import VALIDATION_FILE
    from safethink.judges.train_refusal import as_source, build_head, read_labelled

    rows, sources = {}, {}
    for model, name in FILES.items():
        path = args.data_dir / "xstest_labeled_completions" / name
        with path.open(newline="", encoding="utf-8") as f:
            rows[model] = list(csv.DictReader(f))
        sources[model] = as_source(model, read_labelled(path))
    generated = as_source("generated", generate_refusal_dataset(args.n_per_class, seed=0))

    results: dict[str, dict] = {}
    chosen: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for held, held_rows in rows.items():
            head = build_head(generated, [s for m, s in sources.items() if m != held], seed=0)
            chosen[held] = {k: head[k] for k in ("C", "real_weight", "prefix_rule")}
            head_path = Path(tmp) / f"head-without-{held}.json"
            head_path.write_text(json.dumps(head), encoding="utf-8")
            items = [JudgeInput(prompt=r["prompt"], response=r["completion"]) for r in held_rows]
            truth = [r["final_label"] != "1_full_compliance" for r in held_rows]
            labels = [r["final_label"] for r in held_rows]
            specs = [*KEYWORD_JUDGES, *(f"{j}?head={head_path}" for j in LEARNED_JUDGES)]
            for spec in specs:
                name = spec.split("?", 1)[0]
                verdicts = load_judge(spec).judge(items)
                results.setdefault(name, {})[held] = agreement(truth, [v.refused for v in verdicts], labels)

    # Speed of the shipped judge: 1,000 answers, embedder already loaded (as in a run).
    judge = load_judge("default")
    pool = [JudgeInput(prompt=r["prompt"], response=r["completion"]) for m in rows for r in rows[m]]
    thousand = (pool * 2)[:1000]
    judge.judge(thousand[:8])
    t0 = time.perf_counter()
    judge.judge(thousand)
    secs_1000 = time.perf_counter() - t0

    models = list(rows)

    def cell(m: str):
        return lambda r: (f"{r['per_model'][m]['agreement']:.1%} [{r['per_model'][m]['ci_low']:.1%}-"
                          f"{r['per_model'][m]['ci_high']:.1%}]")

    def errors(m: str):
        return lambda r: f"{r['per_model'][m]['false_refusals']} / {r['per_model'][m]['missed_refusals']}"

    table_rows = [{"judge": name, "worst": min(per[m]["agreement"] for m in models), "per_model": per}
                  for name, per in results.items()]
    columns = {"judge": lambda r: f"`{r['judge']}`"}
    for m in models:
        columns[f"{m} held out"] = cell(m)
        columns[f"false / missed ({m})"] = errors(m)
    columns["worst"] = lambda r: f"{r['worst']:.1%}"
    out = record("judges", table_rows, out=args.json, columns=columns, argv=None if argv is None else [__file__, *argv],
                 title="leave one model out: agreement with human labels on the held-out model's XSTest answers "
                       "(95% CI); false / missed = compliant answers judged refused / refusals judged compliant",
                 description="leave-one-model-out judge agreement with XSTest human labels (refused = full or "
                             "partial refusal)",
                 data={m: f"xstest_labeled_completions/{f}" for m, f in FILES.items()},
                 settings_chosen_without=chosen, seconds_per_1000_answers=round(secs_1000, 2))
    print(f"settings chosen without the held-out model: {chosen}")
    print(f"shipped default judge: {secs_1000:.1f} s for 1,000 answers")
    if args.write_validation:
        table = {
            "format": "safethink-judge-validation/1",
            "labels": "XSTest human labels (complied vs full or partial refusal), leave one model out",
            "command": out["command"], "date": out["date"],
            "judges": {name: {"held_out_agreement": min(per[m]["agreement"] for m in models),
                              "per_model": {m: {k: per[m][k] for k in ("n", "agreement", "ci_low", "ci_high")}
                                            for m in models}}
                       for name, per in results.items()},
        }
        dest = ROOT / "src" / "safethink" / "judges" / "data" / VALIDATION_FILE
        atomic_write_text(dest, json.dumps(table, indent=2) + "\n")
        print(f"wrote {dest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    np.seterr(over="ignore")
    raise SystemExit(main())
