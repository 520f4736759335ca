"""Read CSV / JSON / JSONL / Parquet files into rows, keeping where each row came from.

Every row carries a *locator* (a line number for CSV and JSONL, an item index for JSON arrays
and Parquet) so that a bad value can be reported as ``file:line: column 'x': ...``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import iter_jsonl

TABLE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".ndjson", ".parquet")


@dataclass(frozen=True)
class Row:
    """One row of a table file."""

    values: dict[str, Any]
    line: int
    """CSV/JSONL: the line the row ends on; JSON/Parquet: 1-based item index."""


def read_table(path: str | Path) -> list[Row]:
    """Rows of a table file, chosen by suffix; bad files raise :class:`InputError`."""
    p = Path(path)
    if not p.is_file():
        raise InputError("no such file", path=str(p))
    suffix = p.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return _read_csv(p, "\t" if suffix == ".tsv" else ",")
    if suffix in (".jsonl", ".ndjson"):
        return [Row(obj, n) for n, obj in iter_jsonl(p)]
    if suffix == ".json":
        return _read_json(p)
    if suffix == ".parquet":
        return _read_parquet(p)
    raise InputError(f"unsupported file type {suffix!r}; expected one of {', '.join(TABLE_SUFFIXES)}", path=str(p))


def _read_csv(p: Path, delimiter: str) -> list[Row]:
    rows: list[Row] = []
    with p.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise InputError("empty file (expected a header row)", path=str(p)) from None
        except csv.Error as e:
            raise InputError(f"bad CSV: {e}", path=str(p), line=1) from None
        # JBB's harmful file has an unnamed index column: give it a name rather than ''
        header = [h.strip() or f"column{i}" for i, h in enumerate(header)]
        try:
            for cells in reader:
                if not cells or all(c == "" for c in cells):  # a blank line, not an empty value
                    continue
                if len(cells) != len(header):
                    raise InputError(
                        f"expected {len(header)} columns ({', '.join(header)}), found {len(cells)}",
                        path=str(p), line=reader.line_num,
                    )
                rows.append(Row(dict(zip(header, cells)), reader.line_num))
        except csv.Error as e:
            raise InputError(f"bad CSV: {e}", path=str(p), line=reader.line_num) from None
    return rows


def _read_json(p: Path) -> list[Row]:
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"bad JSON ({e.msg} at column {e.colno})", path=str(p), line=e.lineno) from None
    if isinstance(data, dict):
        # {"data": [...]} / {"rows": [...]} wrappers, or a mapping id -> object
        for key in ("data", "rows", "examples", "train"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
        else:
            if data and all(isinstance(v, dict) for v in data.values()):
                data = [{"id": k, **v} for k, v in data.items()]
    if not isinstance(data, list):
        raise InputError("expected a JSON list of objects", path=str(p))
    rows = []
    for i, obj in enumerate(data, 1):
        if isinstance(obj, str):  # a bare list of prompt strings
            obj = {"prompt": obj}
        if not isinstance(obj, dict):
            raise InputError(f"item {i}: expected an object, found {type(obj).__name__}", path=str(p))
        rows.append(Row(obj, i))
    return rows


def _read_parquet(p: Path) -> list[Row]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        from ..errors import MissingExtraError

        raise MissingExtraError("pyarrow", "report", "reading Parquet files") from None
    try:
        table = pq.read_table(p)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise InputError(f"bad Parquet file: {e}", path=str(p)) from None
    return [Row(obj, i) for i, obj in enumerate(table.to_pylist(), 1)]


def where(path: str | Path, row: Row) -> dict[str, Any]:
    """``InputError`` keyword arguments locating a row (JSON/Parquet rows are items, not lines)."""
    if Path(path).suffix.lower() in (".json", ".parquet"):
        return {"path": f"{path} (item {row.line})"}
    return {"path": str(path), "line": row.line}
