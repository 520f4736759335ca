"""The results store: one SQLite row per attempt, with everything needed to reproduce it.

Rows are written a batch at a time inside one transaction, and every attempt has a unique key, so
a run killed at any point (even SIGKILL) leaves only whole batches behind and a re-run adds
exactly the missing attempts.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import SafethinkError
from ._spec import canonical_json

SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, started REAL NOT NULL, finished REAL, spec TEXT NOT NULL,
    added INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS attempts (
    attempt_key TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    model_spec TEXT NOT NULL, model_name TEXT NOT NULL, adapter TEXT, adapter_hash TEXT NOT NULL,
    model_styles TEXT NOT NULL,
    defence TEXT NOT NULL, defence_name TEXT NOT NULL, defence_spec TEXT NOT NULL, guard_build TEXT NOT NULL,
    attack TEXT NOT NULL, attack_name TEXT NOT NULL, attack_spec TEXT NOT NULL, attack_params TEXT NOT NULL,
    attack_seed INTEGER NOT NULL, attack_meta TEXT NOT NULL, attack_style TEXT,
    dataset TEXT NOT NULL, dataset_spec TEXT NOT NULL, record_id TEXT NOT NULL, label TEXT NOT NULL,
    category TEXT, behaviour TEXT NOT NULL,
    seed INTEGER NOT NULL, generation TEXT NOT NULL,
    messages TEXT NOT NULL, prefix TEXT NOT NULL,
    raw_output TEXT NOT NULL, visible_output TEXT NOT NULL, decoded_output TEXT NOT NULL,
    reasoning TEXT, guard_action TEXT, finish_reason TEXT, guard_info TEXT NOT NULL,
    verdicts TEXT NOT NULL,
    attack_seconds REAL NOT NULL, generate_seconds REAL NOT NULL, judge_seconds REAL NOT NULL,
    created REAL NOT NULL,
    flagged TEXT, leak INTEGER
);
CREATE INDEX IF NOT EXISTS attempts_cell ON attempts (model_name, defence_name, attack_name, dataset);
CREATE TABLE IF NOT EXISTS answers (answer_key TEXT PRIMARY KEY, completion TEXT NOT NULL, created REAL NOT NULL);
"""


def attempt_key(model_spec: str, adapter_hash: str, defence_spec: str, attack_spec: str,
                dataset_spec: str, record_id: str, seed: int) -> str:
    """The identity of one attempt: the same inputs always give the same key."""
    ident = canonical_json([model_spec, adapter_hash, defence_spec, attack_spec, dataset_spec, record_id, seed])
    return hashlib.sha256(ident.encode("utf-8")).hexdigest()


def defence_key(args: dict[str, Any], key: str) -> str:
    """A defence's part of the attempt key: ``key`` (its spec), plus the content hash of each file or directory
    its ``path`` and ``*_path`` arguments name (a probe, for one), also inside nested arguments (a chained
    guard's ``then_args``), so an answer is never reused for a replaced file."""
    files = dict(sorted(_path_args(args, "")))
    if not files:
        return key
    hashes = {("path_sha256" if k == "path" else f"{k}_sha256"): path_hash(v) for k, v in files.items()}
    return canonical_json({"spec": key, **hashes})


def _path_args(args: dict[str, Any], prefix: str) -> list[tuple[str, str]]:
    """``(dotted name, path)`` of every existing file named by a ``path`` / ``*_path`` argument, at any depth."""
    found = []
    for k, v in args.items():
        if isinstance(v, dict):
            found += _path_args(v, f"{prefix}{k}.")
        elif (k == "path" or k.endswith("_path")) and isinstance(v, str) and Path(v).exists():
            found.append((f"{prefix}{k}", v))
    return found


def path_hash(path: str | Path) -> str:
    """Content hash of a file, or of a directory (as :func:`adapter_hash`)."""
    from ..data._training import file_sha256

    return adapter_hash(str(path)) if Path(path).is_dir() else file_sha256(path)


def adapter_hash(adapter: str | None) -> str:
    """Content hash of an adapter directory (every file's relative path and bytes); '' for none."""
    if not adapter:
        return ""
    root = Path(adapter)
    if not root.is_dir():
        raise SafethinkError(f"adapter {adapter}: no such directory")
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        rel = p.relative_to(root).as_posix()
        if rel.startswith(".") or "/." in rel:
            continue
        h.update(rel.encode("utf-8") + b"\0")
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


@dataclass
class Attempt:
    """One stored attempt. JSON-valued fields are kept decoded here."""

    attempt_key: str
    run_id: str
    model_spec: str
    model_name: str
    adapter: str | None
    adapter_hash: str
    model_styles: list[str]
    defence: str
    defence_name: str
    defence_spec: dict[str, Any]
    guard_build: dict[str, Any]
    attack: str
    attack_name: str
    attack_spec: dict[str, Any]
    attack_params: dict[str, Any]
    attack_seed: int
    attack_meta: dict[str, Any]
    attack_style: str | None
    """The evolution style the attack stands for (seen/unseen split)."""
    dataset: str
    dataset_spec: dict[str, Any]
    record_id: str
    label: str
    category: str | None
    behaviour: str
    seed: int
    generation: dict[str, Any]
    messages: list[dict[str, str]]
    prefix: str
    raw_output: str
    visible_output: str
    decoded_output: str
    reasoning: str | None
    guard_action: str | None
    finish_reason: str | None
    guard_info: dict[str, Any]
    verdicts: dict[str, dict[str, Any]]
    attack_seconds: float
    generate_seconds: float
    judge_seconds: float
    created: float = field(default_factory=time.time)
    flagged: list[str] | None = None
    """The texts the guard stopped (``GuardedOutput.flagged``); None for attempts stored before schema v3."""
    leak: bool | None = None
    """Whether the text returned to the user shows one of ``flagged`` (:func:`safethink.guard.leaked`);
    None for attempts stored before schema v3."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_COLUMNS = [f.name for f in fields(Attempt)]
_JSON_COLUMNS = {"model_styles", "defence_spec", "guard_build", "attack_spec", "attack_params", "attack_meta",
                 "dataset_spec", "generation", "messages", "guard_info", "verdicts", "flagged"}
_BOOL_COLUMNS = {"leak"}
_ADDED_COLUMNS = {
    2: [("attack_style", "TEXT")],                   # the attack style (seen/unseen split)
    3: [("flagged", "TEXT"), ("leak", "INTEGER")],  # what the guard stopped, and whether it was shown
}
"""Schema version -> the attempt columns it added; an older store gets them (NULL in its stored rows)."""


class ResultStore:
    """SQLite results file (WAL mode, one writer). Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(_SCHEMA)
            ver = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.DatabaseError as e:
            raise SafethinkError(f"{self.path}: not a safethink results database ({e})") from None
        if ver is None:
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif 1 <= int(ver[0]) < SCHEMA_VERSION:
            self._migrate(int(ver[0]))
        elif int(ver[0]) != SCHEMA_VERSION:
            raise SafethinkError(f"{self.path}: results schema v{ver[0]}, this safethink reads v{SCHEMA_VERSION}")

    def _migrate(self, version: int) -> None:
        """Bring an older store up to :data:`SCHEMA_VERSION` in one transaction, keeping every result.
        Columns added later read as None for the rows stored before them."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            have = {r[1] for r in self.conn.execute("PRAGMA table_info(attempts)")}
            for v in range(version + 1, SCHEMA_VERSION + 1):
                for name, kind in _ADDED_COLUMNS[v]:
                    if name not in have:
                        self.conn.execute(f"ALTER TABLE attempts ADD COLUMN {name} {kind}")
            self.conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    # runs -------------------------------------------------------------------------------
    def start_run(self, run_id: str, spec: dict[str, Any]) -> None:
        self.conn.execute("INSERT INTO runs (run_id, started, spec) VALUES (?, ?, ?)",
                          (run_id, time.time(), canonical_json(spec)))

    def finish_run(self, run_id: str, added: int) -> None:
        self.conn.execute("UPDATE runs SET finished=?, added=? WHERE run_id=?", (time.time(), added, run_id))

    def runs(self) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT run_id, started, finished, spec, added FROM runs ORDER BY started").fetchall()
        return [{"run_id": r[0], "started": r[1], "finished": r[2], "spec": json.loads(r[3]), "added": r[4]} for r in rows]

    def generation_configs(self) -> set[str]:
        """Distinct generation settings already stored (canonical JSON)."""
        return {r[0] for r in self.conn.execute("SELECT DISTINCT generation FROM attempts")}

    # attempts ---------------------------------------------------------------------------
    def done_keys(self, keys: Iterable[str]) -> set[str]:
        keys = list(keys)
        done: set[str] = set()
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            q = f"SELECT attempt_key FROM attempts WHERE attempt_key IN ({','.join('?' * len(chunk))})"
            done.update(r[0] for r in self.conn.execute(q, chunk))
        return done

    def add(self, attempts: Sequence[Attempt]) -> int:
        """Insert a batch atomically; attempts already stored are skipped. Returns rows added."""
        if not attempts:
            return 0
        cols = ",".join(_COLUMNS)
        q = f"INSERT OR IGNORE INTO attempts ({cols}) VALUES ({','.join('?' * len(_COLUMNS))})"
        rows = [tuple(canonical_json(v) if c in _JSON_COLUMNS and v is not None else v
                      for c, v in zip(_COLUMNS, astuple_shallow(a))) for a in attempts]
        before = self.conn.total_changes
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.executemany(q, rows)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return self.conn.total_changes - before

    def update_verdicts(self, updates: Sequence[tuple[str, dict[str, dict[str, Any]]]]) -> None:
        """Replace the verdicts of existing attempts (used when a judge is added to a finished run)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.executemany("UPDATE attempts SET verdicts=? WHERE attempt_key=?",
                                  [(canonical_json(v), k) for k, v in updates])
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def missing_verdicts(self, judge_keys: Sequence[str]) -> set[str]:
        """Keys of attempts that lack a verdict from at least one of these judges."""
        out: set[str] = set()
        for k in judge_keys:
            path = "$." + json.dumps(k)  # quoted, so judge keys with dots or dashes work
            out.update(r[0] for r in self.conn.execute(
                "SELECT attempt_key FROM attempts WHERE json_type(verdicts, ?) IS NULL", (path,)))
        return out

    def count(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM attempts").fetchone()[0]

    # answers: greedy completions shared by every defence that sends the model the same input --------------
    def answers(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Stored completions (as JSON objects) of these answer keys; keys not stored are absent."""
        keys = list(keys)
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            q = f"SELECT answer_key, completion FROM answers WHERE answer_key IN ({','.join('?' * len(chunk))})"
            out.update((k, json.loads(v)) for k, v in self.conn.execute(q, chunk))
        return out

    def add_answers(self, rows: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Store completions under their answer keys in one transaction (a key already stored is kept)."""
        if not rows:
            return
        now = time.time()
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.executemany("INSERT OR IGNORE INTO answers VALUES (?, ?, ?)",
                                  [(k, canonical_json(v), now) for k, v in rows])
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def attempts(self, where: str = "", params: Sequence[Any] = ()) -> list[Attempt]:
        """Every stored attempt (optionally filtered by an SQL ``where`` clause), in insertion order."""
        q = f"SELECT {','.join(_COLUMNS)} FROM attempts {('WHERE ' + where) if where else ''} ORDER BY rowid"
        out = []
        for row in self.conn.execute(q, tuple(params)):
            out.append(Attempt(**{c: _read(c, v) for c, v in zip(_COLUMNS, row)}))
        return out


def _read(column: str, value: Any) -> Any:
    if value is None:  # a column added after this row was stored
        return None
    if column in _JSON_COLUMNS:
        return json.loads(value)
    return bool(value) if column in _BOOL_COLUMNS else value


def astuple_shallow(a: Attempt) -> tuple[Any, ...]:
    return tuple(getattr(a, c) for c in _COLUMNS)


def open_store(run_dir_or_file: str | Path) -> ResultStore:
    """Open an existing results file, given it or the run directory holding ``results.sqlite``."""
    p = Path(run_dir_or_file)
    if p.is_dir():
        p = p / "results.sqlite"
    if not p.is_file():
        raise SafethinkError(f"{p}: no results database (run `safethink eval` first)")
    return ResultStore(p)
