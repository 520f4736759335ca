"""Small file helpers: the one reader for user input files (UTF-8 checked, errors that name the file
and line), atomic writes, and crash-tolerant append-only JSONL logs (journals, checkpoints)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import InputError

_BOM = "\ufeff"


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a file so that readers see the old content or the new, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# -- reading user input -----------------------------------------------------------------------------

def _not_utf8(e: UnicodeDecodeError, data: bytes, path: Path, line: int, offset: int) -> InputError:
    bad = data[e.start:e.start + 4].hex(" ")
    return InputError(f"not valid UTF-8 (bytes {bad} at byte offset {offset + e.start}); save the file as UTF-8",
                      path=str(path), line=line)


def read_text(path: str | Path) -> str:
    """A whole input file as text (a leading BOM dropped). A missing file or bytes that are not UTF-8
    raise :class:`InputError` naming the file, the line and the byte offset."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=str(path))
    data = path.read_bytes()
    try:
        return data.decode("utf-8").removeprefix(_BOM)
    except UnicodeDecodeError as e:
        raise _not_utf8(e, data, path, data.count(b"\n", 0, e.start) + 1, 0) from None


def check_text(path: str | Path) -> None:
    """Raise :class:`InputError` now if ``path`` is missing or not UTF-8 (before anything is written)."""
    read_text(path)


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield (line number, text) of an input file, streamed; bad UTF-8 raises :class:`InputError`."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=str(path))
    offset = 0
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _not_utf8(e, raw, path, n, offset) from None
            offset += len(raw)
            yield n, text.removeprefix(_BOM) if n == 1 else text


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for every non-blank line; bad JSON or UTF-8 raises :class:`InputError`."""
    for n, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"bad JSON ({e.msg} at column {e.colno})", path=str(path), line=n) from None
        if not isinstance(obj, dict):
            raise InputError("expected a JSON object", path=str(path), line=n)
        yield n, obj


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


# -- append-only logs -------------------------------------------------------------------------------

def read_log(path: str | Path) -> list[Any]:
    """Every complete line of an append-only JSONL log, in order. A line a crash tore (cut short,
    even inside a UTF-8 character, or run together with the next) does not parse and is left out
    alone: the complete lines after it are kept."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    with path.open("rb") as f:
        for raw in f:
            try:
                out.append(json.loads(raw.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
    return out


def append_log(path: str | Path, rows: list[Any]) -> None:
    """Append rows to a JSONL log and fsync. A torn last line is ended first, so the new rows never
    run into it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab+") as f:
        f.seek(0, os.SEEK_END)
        torn = False
        if f.tell():
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
        f.write((b"\n" if torn else b"") + data)
        f.flush()
        os.fsync(f.fileno())
