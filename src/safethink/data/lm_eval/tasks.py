"""Data loading and scoring for the ``safethink_basics`` lm-eval task.

lm-eval loads this file by path (``!function tasks.load_basics``), so it imports nothing from
safethink. An answer is normalised (lower case, punctuation to spaces, leading "the"/"a"/"an"
dropped, whitespace collapsed) before scoring:

- ``exact_match``: the normalised answer equals one of the normalised accepted answers;
- ``contains``: an accepted answer appears in it as whole words ("The capital is Paris." counts),
  a looser score for small models that answer in a sentence.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

DATA = Path(__file__).resolve().parent / "safethink_basics.jsonl"
_PUNCT = re.compile(r"[^\w\s]|_")
_ARTICLE = re.compile(r"^(the|a|an)\s+")


def load_basics(**_kwargs):
    """The questions as a ``datasets.DatasetDict`` with one ``test`` split."""
    import datasets

    rows = []
    for n, line in enumerate(DATA.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        answers = row.get("answers")
        if not (isinstance(row.get("question"), str) and isinstance(answers, list) and answers
                and all(isinstance(a, str) and normalize(a) for a in answers)):
            raise ValueError(f"{DATA}:{n}: expected a string 'question' and a non-empty list of string 'answers'")
        rows.append(row)
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def normalize(text: str) -> str:
    text = " ".join(_PUNCT.sub(" ", text.lower()).split())
    return _ARTICLE.sub("", text)


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    response = normalize(results[0] or "")
    answers = [normalize(a) for a in doc["answers"]]
    padded = f" {response} "
    return {
        "exact_match": float(response in answers),
        "contains": float(any(f" {a} " in padded for a in answers)),
    }
