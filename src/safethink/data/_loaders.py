"""``load_prompts``: every dataset, public or local, becomes a list of :class:`PromptRecord`."""

from __future__ import annotations

import glob
import os
import random
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from ..errors import InputError, SafethinkError, SpecError
from ._schema import Label, PromptRecord
from ._sources import BUILTIN_NAMES, BUILTIN_SETS, BUILTIN_SPLITS, HF_ALIASES, SOURCES, SourceSpec
from ._tabular import TABLE_SUFFIXES, Row, read_table, where

# A local file whose prompt column has one of these names needs no column map (first match wins).
PROMPT_COLUMNS = ("prompt", "goal", "instruction", "behavior", "forbidden_prompt", "question", "query",
                  "request", "text", "user")
_HARMFUL_VALUES = {"harmful", "unsafe", "1", "true", "yes", "malicious", "toxic"}
_BENIGN_VALUES = {"benign", "safe", "0", "false", "no", "harmless"}
_FIELDS = ("prompt", "id", "category", "target", "context", "label")

SEEDS_DIR = Path(__file__).parent / "seeds"


def load_prompts(
    source: str,
    *,
    label: Literal["harmful", "benign"] | None = None,
    column_map: dict[str, str] | None = None,
    limit: int | None = None,
    seed: int = 0,
    data_dir: str | None = None,
) -> list[PromptRecord]:
    """Load prompts from a public dataset name, a Hugging Face id, ``builtin:<set>`` or a local file.

    ``label`` keeps only that label where a source has both (XSTest, a file with a label column)
    and assigns it to a local file that has none. ``column_map`` maps PromptRecord fields
    (prompt, id, category, target, context, label) to column names. ``limit`` takes a sample of
    that size chosen by ``seed`` (kept in source order). Nothing is ever downloaded.
    """
    if limit is not None and limit < 1:
        raise SpecError("limit must be >= 1")
    records = _load_all(source, label=label, column_map=column_map, data_dir=data_dir)
    if label is not None:
        records = [r for r in records if r.label == label]
    if not records:
        raise InputError(f"{source}: no {label + ' ' if label else ''}prompts found")
    if limit is not None and limit < len(records):
        keep = sorted(random.Random(seed).sample(range(len(records)), limit))
        records = [records[i] for i in keep]
    return records


def _load_all(source: str, *, label: Label | None, column_map: dict[str, str] | None,
              data_dir: str | None) -> list[PromptRecord]:
    if source.startswith("builtin:"):
        return _load_builtin(source.split(":", 1)[1])
    if source.startswith(FRAME_TWINS):
        return _load_frame_twins(source[len(FRAME_TWINS):], label=label, data_dir=data_dir)
    name = source.lower()
    if name in HF_ALIASES:
        name = HF_ALIASES[name]
        if name == "jbb-harmful" and label == "benign":
            name = "jbb-benign"
    if name in SOURCES:
        return _load_public(SOURCES[name], label=label, data_dir=data_dir, column_map=column_map)
    path = Path(source).expanduser()
    if path.is_file() or path.suffix.lower() in TABLE_SUFFIXES:
        return load_file(path, label=label, column_map=column_map)
    known = (", ".join(sorted(SOURCES)) + ", " + ", ".join(f"builtin:{b}" for b in BUILTIN_NAMES)
             + f", {FRAME_TWINS}<harmful source>")
    raise SpecError(f"unknown dataset {source!r}: expected one of {known}, a Hugging Face id, or a local "
                    f"file ({'/'.join(s.lstrip('.') for s in TABLE_SUFFIXES)})")


FRAME_TWINS = "frame-twins:"
"""Prefix of a derived source: ``frame-twins:<source>`` is one benign frame twin per harmful request of
``<source>`` (:func:`safethink.data.frame_twins`), written offline."""


def _load_frame_twins(inner: str, *, label: Label | None, data_dir: str | None) -> list[PromptRecord]:
    from ._frames import frame_twin_records

    if not inner:
        raise SpecError(f"{FRAME_TWINS}<source> needs the harmful source to twin, e.g. {FRAME_TWINS}advbench")
    if label == "harmful":
        raise SpecError(f"{FRAME_TWINS}{inner} holds benign twins; it cannot be a harmful source")
    harmful = load_prompts(inner, label="harmful", data_dir=data_dir)
    twins = frame_twin_records(harmful, source=FRAME_TWINS + inner)
    if not twins:
        raise InputError(f"{FRAME_TWINS}{inner}: none of its {len(harmful)} harmful requests has a shape a frame "
                         "twin can be written for ('how to <act>', 'for <act>ing', '<a thing> that ...')")
    return twins


# ------------------------------------------------------------------ local files
def load_file(path: str | Path, *, label: Label | None = None, column_map: dict[str, str] | None = None,
              source: str | None = None, category: str | None = None) -> list[PromptRecord]:
    """Read one CSV/JSON/JSONL/Parquet file. Rows need a label column or the ``label`` argument."""
    path = Path(path)
    rows = read_table(path)
    if not rows:
        raise InputError("no rows in file", path=str(path))
    return _rows_to_records(rows, path, source=source or path.stem, columns=dict(column_map or {}),
                            fixed_label=label, category=category, label_column=None, explicit=bool(column_map))


def _rows_to_records(rows: list[Row], path: Path, *, source: str, columns: dict[str, str],
                     fixed_label: Label | None, category: str | None, label_column: str | None,
                     explicit: bool) -> list[PromptRecord]:
    unknown = set(columns) - set(_FIELDS)
    if unknown:
        raise SpecError(f"column_map: unknown field(s) {sorted(unknown)}; expected some of {list(_FIELDS)}")
    first = {k.lower(): k for k in rows[0].values}
    if "prompt" not in columns:
        found = next((c for c in PROMPT_COLUMNS if c in first), None)
        if found is None:
            raise InputError(f"no prompt column (looked for {', '.join(PROMPT_COLUMNS)}); columns are "
                             f"{', '.join(rows[0].values)}; pass a column map such as prompt=<column>",
                             **where(path, rows[0]))
        columns["prompt"] = found
    if not explicit:  # pick up the optional fields a file carries under their usual names
        for f_, candidates in (("id", ("id",)), ("target", ("target",)), ("category", ("category",)),
                               ("context", ("context", "contextstring"))):
            if f_ not in columns:
                hit = next((c for c in candidates if c in first), None)
                if hit:
                    columns[f_] = hit
    lab_col = columns.get("label") or label_column or ("label" if "label" in first and not explicit else None)
    if fixed_label is None and lab_col is None:
        raise InputError("rows have no label column; pass label='harmful' or 'benign' (--label) or map a "
                         "label column", path=str(path))
    for field_, col in columns.items():
        if col.lower() not in first:
            raise InputError(f"column {col!r} (for {field_}) not found; columns are {', '.join(rows[0].values)}",
                             **where(path, rows[0]))
    # Alpaca keeps part of the request in 'input'; it belongs to the prompt
    add_input = columns["prompt"].lower() == "instruction" and "input" in first
    out: list[PromptRecord] = []
    for i, row in enumerate(rows):
        vals = {k.lower(): v for k, v in row.values.items()}

        def get(field_: str) -> Any:
            col = columns.get(field_)
            return vals.get(col.lower()) if col else None

        prompt = get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            what = "empty prompt" if prompt in (None, "") or isinstance(prompt, str) else f"expected text, found {type(prompt).__name__}"
            raise InputError(f"column {columns['prompt']!r}: {what}", **where(path, row))
        if add_input and isinstance(vals.get("input"), str) and vals["input"].strip():
            prompt = f"{prompt.strip()}\n\n{vals['input'].strip()}"
        rec_label = fixed_label
        if lab_col is not None:
            raw = str(vals.get(lab_col.lower(), "")).strip().lower()
            if raw in _HARMFUL_VALUES:
                rec_label = "harmful"
            elif raw in _BENIGN_VALUES:
                rec_label = "benign"
            elif fixed_label is None:
                raise InputError(f"column {lab_col!r}: label {raw!r} is not one of harmful/unsafe or benign/safe",
                                 **where(path, row))
            else:
                rec_label = None  # filtered out below: a label we cannot read is not the requested one
            if fixed_label is not None and rec_label != fixed_label:
                continue
        raw_id = get("id")
        rid = f"{source}/{raw_id}" if raw_id not in (None, "") else f"{source}/{i}"
        cat = get("category")
        meta = {k: v for k, v in row.values.items() if k.lower() not in {c.lower() for c in columns.values()}
                and isinstance(v, (str, int, float, bool)) and v not in ("", None)}
        out.append(PromptRecord(
            id=rid, prompt=prompt, label=rec_label or "harmful", source=source,
            category=str(cat) if cat not in (None, "") else category,
            target=_text(get("target")), context=_text(get("context")), meta=meta,
        ))
    return out


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) and v.strip() else None


# ------------------------------------------------------------------ public sources
def default_data_dir(data_dir: str | None = None) -> Path | None:
    d = data_dir or os.environ.get("SAFETHINK_DATA_DIR")
    return Path(d).expanduser() if d else None


def _load_public(spec: SourceSpec, *, label: Label | None, data_dir: str | None,
                 column_map: dict[str, str] | None) -> list[PromptRecord]:
    if spec.label in ("harmful", "benign") and label not in (None, spec.label):
        raise SpecError(f"{spec.name} holds only {spec.label} prompts (asked for label={label!r})")
    root = default_data_dir(data_dir)
    files: list[Path] = []
    if root is not None:
        for pattern in spec.files:
            files = [Path(p) for p in sorted(glob.glob(str(root / pattern)))]
            if files:
                break
    columns = dict(spec.columns)
    if not files:
        files = _hf_files(spec)
        if files and spec.hf_columns:
            columns = dict(spec.hf_columns)
    if not files:
        raise SafethinkError(_offline_hint(spec, root))
    if column_map:
        columns.update(column_map)
    fixed = None if spec.label == "column" else spec.label  # type: ignore[assignment]
    out: list[PromptRecord] = []
    for f in files:
        rows = read_table(f)
        if not rows:
            continue
        src = spec.name if len(files) == 1 else f"{spec.name}/{f.stem}"
        recs = _rows_to_records(rows, f, source=spec.name, columns=dict(columns), fixed_label=fixed,
                                category=f.stem if spec.category_from_file else None,
                                label_column=spec.label_column, explicit=True)
        if len(files) > 1:
            recs = [r.model_copy(update={"id": r.id.replace(spec.name, src, 1)}) for r in recs]
        out.extend(recs)
    if spec.targets_file and root is not None:
        out = _attach_targets(out, root, spec)
    if spec.only_label:
        out = [r for r in out if r.label == spec.only_label]
    return out


def _attach_targets(records: list[PromptRecord], root: Path, spec: SourceSpec) -> list[PromptRecord]:
    import json

    targets: dict[str, str] = {}
    for f in sorted(glob.glob(str(root / spec.targets_file))):  # type: ignore[operator]
        try:
            targets.update(json.loads(Path(f).read_text(encoding="utf-8")))
        except json.JSONDecodeError as e:
            raise InputError(f"bad JSON ({e.msg})", path=f, line=e.lineno) from None
    prefix = f"{spec.name}/"
    return [r.model_copy(update={"target": targets.get(r.id[len(prefix):], r.target)}) for r in records]


def hf_hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home).expanduser() / "hub"


def _hf_files(spec: SourceSpec) -> list[Path]:
    """Data files of the first cached snapshot of the source's hub ids (the split's file if named)."""
    for repo in spec.hf_ids:
        d = hf_hub_cache() / f"datasets--{repo.replace('/', '--')}"
        snaps = d / "snapshots"
        if not snaps.is_dir():
            continue
        ref = d / "refs" / "main"
        snap = snaps / ref.read_text().strip() if ref.is_file() else None
        if snap is None or not snap.is_dir():
            cands = sorted(snaps.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
            snap = cands[0] if cands else None
        if snap is None:
            continue
        files = sorted(p for p in snap.rglob("*") if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES)
        split = [p for p in files if spec.hf_split in str(p.relative_to(snap)).lower()]
        if split or len(files) == 1:
            return split or files
    return []


def _offline_hint(spec: SourceSpec, root: Path | None) -> str:
    where_ = f"{root}/{spec.files[0]}" if root else f"<dir>/{spec.files[0]} and pass --data-dir <dir> (or set SAFETHINK_DATA_DIR)"
    hub = (f", or cache it once where the hub is reachable: huggingface-cli download --repo-type dataset "
           f"{spec.hf_ids[0]}") if spec.hf_ids else ""
    return f"dataset {spec.name!r} is not available offline: put a copy at {where_}{hub}, or pass the file path"


# ------------------------------------------------------------------ built-in seed set
# Keys a seed line may carry beyond id and prompt; they go to ``meta`` (``system``/``history`` to the history).
_SEED_META_KEYS = ("twin", "twin_of", "note", "kind", "group", "split")


def _load_builtin(name: str) -> list[PromptRecord]:
    if name not in BUILTIN_NAMES:
        raise SpecError(f"unknown built-in set builtin:{name}; expected one of "
                        + ", ".join(f"builtin:{b}" for b in BUILTIN_NAMES))
    base, part = name, None
    if name not in BUILTIN_SETS:  # '<set>-<split>'
        base, part = next((b, name[len(b) + 1:]) for b in BUILTIN_SPLITS if name.startswith(b + "-"))
    path = SEEDS_DIR / f"{base}.jsonl"
    if not path.is_file():
        raise SafethinkError(f"built-in seed file missing from the installation: {path}")
    records = load_seed_file(path, base)
    if part is None:
        return records
    return [r.model_copy(update={"source": f"builtin:{name}"}) for r in records if r.meta.get("split") == part]


def load_seed_file(path: Path, name: str) -> list[PromptRecord]:
    """Read a seed file in the built-in format (``{"id","prompt",...}`` per line).

    Besides the keys kept in ``meta``, a line may carry ``system`` (a system prompt) and ``history``
    (earlier ``{"role","content"}`` turns); the system prompt becomes the first history message. A
    line with a ``kind`` takes it as its category.
    """
    label: Label = "harmful" if name == "harmful" else "benign"
    rows = read_table(path)
    out = []
    seen: set[str] = set()
    for row in rows:
        v = row.values
        for key in ("id", "prompt"):
            if not isinstance(v.get(key), str) or not v[key].strip():
                raise InputError(f"field {key!r}: expected a non-empty string", path=str(path), line=row.line)
        if v["id"] in seen:
            raise InputError(f"duplicate id {v['id']!r}", path=str(path), line=row.line)
        seen.add(v["id"])
        meta = {k: v[k] for k in _SEED_META_KEYS if v.get(k)}
        meta["seed_id"] = v["id"]
        history = _seed_history(v, path, row.line)
        try:
            out.append(PromptRecord(id=f"builtin:{name}/{v['id']}", prompt=v["prompt"], label=label,
                                    category=v.get("category") or v.get("kind") or None, source=f"builtin:{name}",
                                    meta=meta, history=history))
        except ValidationError as e:
            err = e.errors()[0]
            where_ = ".".join(str(x) for x in err["loc"])
            raise InputError(f"{where_}: {err['msg']}", path=str(path), line=row.line) from None
    return out


def _seed_history(v: dict[str, Any], path: Path, line: int) -> list[Any]:
    system, history = v.get("system"), v.get("history", [])
    if system is not None and (not isinstance(system, str) or not system.strip()):
        raise InputError("field 'system': expected a non-empty string", path=str(path), line=line)
    if not isinstance(history, list):
        raise InputError("field 'history': expected a list of {role, content} objects", path=str(path), line=line)
    return ([{"role": "system", "content": system}] if system else []) + history
