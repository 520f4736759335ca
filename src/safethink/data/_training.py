"""The on-disk training set: JSONL shards + ``manifest.json`` (written by ``safethink data build``,
read by ``safethink train``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import InputError
from ..io import iter_jsonl

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.jsonl"


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str


class TrainingRecord(BaseModel):
    """One chat-formatted training example."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, description="Unique within the set.")
    method: Literal["scot", "r2d"]
    kind: Literal["refusal", "retain"] = Field(description="refusal: harmful prompt; retain: benign prompt answered.")
    label: Literal["harmful", "benign"]
    categories: list[str] = Field(description="Policy ids the request violates ([] for benign).")
    style: str = Field(description="'original' or the evolution style of the prompt.")
    source: str
    messages: list[ChatMessage]

    @field_validator("messages")
    @classmethod
    def _shape(cls, v: list[ChatMessage]) -> list[ChatMessage]:
        roles = [m.role for m in v]
        if roles not in (["user", "assistant"], ["system", "user", "assistant"]):
            raise ValueError(f"expected [system,] user, assistant messages, found {roles}")
        if not v[-1].content.strip() or not v[-2].content.strip():
            raise ValueError("empty user or assistant message")
        return v


class ShardInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    file: str
    sha256: str
    records: int


class Manifest(BaseModel):
    """What a built set holds and how it was made."""

    model_config = ConfigDict(extra="allow")  # later versions may add fields; readers ignore them

    method: Literal["scot", "r2d"]
    counts: dict[str, Any]
    teacher: str
    seed: int
    policy: str = Field(description="'<policy id>@<hash prefix>'.")
    styles: list[str] = Field(description="Evolution styles present in the training prompts (besides 'original').")
    shards: list[ShardInfo]
    content_hash: str = Field(description="sha256 over the shard hashes, in order.")
    format_version: int = FORMAT_VERSION


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_hash(shard_hashes: list[str]) -> str:
    return hashlib.sha256("\n".join(shard_hashes).encode()).hexdigest()


def read_manifest(directory: str | Path) -> Manifest:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise InputError(f"no {MANIFEST} (not a built training set, or the build has not finished)",
                         path=str(directory))
    try:
        return Manifest.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except json.JSONDecodeError as e:
        raise InputError(f"bad JSON ({e.msg})", path=str(path), line=e.lineno) from None
    except ValidationError as e:
        err = e.errors()[0]
        raise InputError(f"{'.'.join(map(str, err['loc']))}: {err['msg']}", path=str(path)) from None


def parse_record(obj: dict[str, Any], *, path: str | Path, line: int) -> TrainingRecord:
    try:
        return TrainingRecord.model_validate(obj)
    except ValidationError as e:
        err = e.errors()[0]
        raise InputError(f"{'.'.join(map(str, err['loc'])) or 'record'}: {err['msg']}", path=str(path),
                         line=line) from None


def iter_training_records(directory: str | Path, *, verify: bool = True) -> Iterator[TrainingRecord]:
    """Every record of a built set, shard by shard (hashes checked when ``verify``)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    for shard in manifest.shards:
        path = directory / shard.file
        if verify and (not path.is_file() or file_sha256(path) != shard.sha256):
            raise InputError("shard missing or its sha256 differs from the manifest", path=str(path))
        for n, obj in iter_jsonl(path):
            yield parse_record(obj, path=path, line=n)


def load_training_set(directory: str | Path) -> tuple[Manifest, list[TrainingRecord]]:
    """The manifest and all records of a built set."""
    return read_manifest(directory), list(iter_training_records(directory))
