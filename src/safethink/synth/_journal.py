"""The resumable part of data building: the journal every written record goes to first, and the shard checks
that decide whether a finished shard can be kept."""

from __future__ import annotations

import json
from pathlib import Path

from ..io import append_log, read_log


class Journal:
    """Append-only, fsynced JSONL; the last line of an id wins (a failed record retried later)."""

    def __init__(self, path: Path):
        self.path = path
        self.records: dict[str, dict] = {}
        for obj in read_log(path):  # a line a crash tore is left out; that record is rebuilt
            if isinstance(obj, dict) and isinstance(obj.get("id"), str):
                self.records[obj["id"]] = obj

    def add(self, recs: list[dict]) -> None:
        append_log(self.path, recs)
        for r in recs:
            self.records[r["id"]] = r

    def done(self, rid: str) -> bool:
        """Whether record ``rid`` is written (by the teacher or a fallback), not missing or failed."""
        entry = self.records.get(rid)
        return entry is not None and "failed" not in entry


def shard_line(entry: dict) -> str:
    """A journalled record as its shard line (the journal's own bookkeeping left out)."""
    return json.dumps({k: v for k, v in entry.items() if k != "fallback"}, ensure_ascii=False) + "\n"


def shard_ok(path: Path, ids: list[str]) -> bool:
    try:
        with path.open(encoding="utf-8") as f:
            got = [json.loads(line)["id"] for line in f if line.strip()]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return False
    return got == ids
