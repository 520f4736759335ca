"""What each shipped judge was validated on: its agreement with human labels on answers of models it
was neither fitted nor chosen on (leave-one-model-out), as measured by ``benchmarks/judges.py``.

The numbers live in ``data/validation.json`` (written by that benchmark with ``--write-validation``),
so the report can print, next to every ASR, how far the judge that produced it can be trusted.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

VALIDATION_FILE = "validation.json"


@lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    ref = resources.files(__package__).joinpath("data", VALIDATION_FILE)
    try:
        return json.loads(ref.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def judge_validation(spec: str) -> dict[str, Any] | None:
    """The stored validation of the judge ``spec`` names (its name before any ``?args``), or ``None``
    when that judge was never validated. Keys: ``held_out_agreement`` (the lowest per-model agreement on
    a held-out model), ``per_model`` (``{model: {n, agreement, ci_low, ci_high}}``), ``labels`` and
    ``command`` (how it was measured)."""
    name = spec.split("?", 1)[0].strip()
    entry = _table().get("judges", {}).get(name)
    if entry is None:
        return None
    return {**entry, "labels": _table().get("labels"), "command": _table().get("command")}
