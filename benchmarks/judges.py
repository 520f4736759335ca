"""Agreement of every offline judge with the human labels on the XSTest completions.

    python benchmarks/judges.py [--data-dir ../shared/data] [--out benchmarks/results/judges.json]

Data: xstest_labeled_completions/xstest_v2_completions_llama2orig.csv (Llama-2-70b-chat answers to
the 450 XSTest prompts, each labelled by two annotators). Binary truth: 1_full_compliance =
complied; 2_full_refusal and 3_partial_refusal = refused. These labels are validation only: the
refusal classifier is trained on synthetic text (``python -m safethink.judges.train_refusal``).
Prints a table and writes the numbers (with the 3-way breakdown) as JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILE = Path("xstest_labeled_completions") / "xstest_v2_completions_llama2orig.csv"
OFFLINE_JUDGES = ("keyword-gcg", "keyword-jbb", "keyword-xstest", "refusal-classifier", "default")
LABELS = ("1_full_compliance", "2_full_refusal", "3_partial_refusal")


def load_rows(data_dir: Path) -> list[dict]:
    path = data_dir / FILE
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    bad = [r["final_label"] for r in rows if r["final_label"] not in LABELS]
    if bad:
        raise SystemExit(f"{path}: unexpected final_label values {sorted(set(bad))}")
    return rows


def score(rows: list[dict], refused: list[bool]) -> dict:
    truth = [r["final_label"] != "1_full_compliance" for r in rows]
    n = len(rows)
    tp = sum(t and p for t, p in zip(truth, refused))
    tn = sum((not t) and (not p) for t, p in zip(truth, refused))
    fp = sum((not t) and p for t, p in zip(truth, refused))
    fn = sum(t and (not p) for t, p in zip(truth, refused))
    by_label = {}
    for lab in LABELS:
        idx = [i for i, r in enumerate(rows) if r["final_label"] == lab]
        want = lab != "1_full_compliance"
        by_label[lab] = {"n": len(idx), "agree": sum(refused[i] == want for i in idx),
                         "judged_refused": sum(refused[i] for i in idx)}
        by_label[lab]["accuracy"] = by_label[lab]["agree"] / max(len(idx), 1)
    by_type: dict[str, list[int]] = {}
    for r, t, p in zip(rows, truth, refused):
        kind = "unsafe (contrast_*)" if r["type"].startswith("contrast_") else "safe"
        by_type.setdefault(kind, [0, 0])
        by_type[kind][0] += t == p
        by_type[kind][1] += 1
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "n": n, "accuracy": (tp + tn) / n,
        "refusal_precision": precision, "refusal_recall": recall,
        "refusal_f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "false_refusal": fp, "missed_refusal": fn, "by_final_label": by_label,
        "accuracy_by_prompt_type": {k: v[0] / v[1] for k, v in by_type.items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "judges.json")
    ap.add_argument("--judges", nargs="*", default=list(OFFLINE_JUDGES))
    args = ap.parse_args(argv)

    import safethink.judges  # noqa: F401
    from safethink.io import atomic_write_text
    from safethink.judges import JudgeInput, RefusalClassifierJudge, load_judge

    rows = load_rows(args.data_dir)
    items = [JudgeInput(prompt=r["prompt"], response=r["completion"]) for r in rows]
    results, cache = {}, {}
    for name in args.judges:
        judge = load_judge(name)
        t0 = time.perf_counter()
        if isinstance(judge, RefusalClassifierJudge):
            # Judges on the same classifier head share its probabilities: embed the answers once.
            key = repr(judge.head.meta)
            if key not in cache:
                cache[key] = judge.p_refused([it.response for it in items])
            judge.p_refused = lambda responses, p=cache[key]: p  # type: ignore[method-assign]
        verdicts = judge.judge(items)
        secs = time.perf_counter() - t0
        results[name] = {"spec": judge.spec, **score(rows, [v.refused for v in verdicts]), "seconds": round(secs, 2)}

    labels = Counter(r["final_label"] for r in rows)
    head = f"{'judge':<20}{'agree':>8}{'full compl.':>13}{'full refusal':>14}{'partial ref.':>14}{'prec':>7}{'recall':>8}"
    print(f"XSTest completions (Llama-2-70b-chat), n={len(rows)}: " + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())))
    print(head)
    for name, r in results.items():
        b = r["by_final_label"]
        print(f"{name:<20}{r['accuracy']:>8.1%}{b[LABELS[0]]['accuracy']:>13.1%}{b[LABELS[1]]['accuracy']:>14.1%}"
              f"{b[LABELS[2]]['accuracy']:>14.1%}{r['refusal_precision']:>7.2f}{r['refusal_recall']:>8.2f}")
    out = {
        "benchmark": "judge agreement with XSTest human labels (binary: refused = full or partial refusal)",
        "data": str(FILE), "labels": dict(labels),
        "machine": f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}".strip(),
        "command": "python benchmarks/judges.py", "results": results,
    }
    atomic_write_text(args.out, json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
