"""``safethink data check``: validate a built training set and summarise it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..data._formats import PIVOT_RETHINK, PIVOT_UNSAFE, PIVOTS, THINK_CLOSE, THINK_OPEN, parse_r2d, parse_scot
from ..data._training import file_sha256, content_hash, parse_record, read_manifest
from ..errors import InputError
from ..io import iter_jsonl

MAX_ERRORS = 50


@dataclass
class CheckReport:
    directory: str
    records: int = 0
    counts: dict[str, Counter] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def error(self, msg: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(msg)


def _check_scot(text: str, label: str, cats: list[str]) -> str | None:
    p = parse_scot(text)
    if not p.well_formed:
        return "SCoT reasoning lacks the verify/response headers in order"
    if not p.response:
        return "empty response after the response header"
    yes = sorted(c for c, v in p.verdicts.items() if v)
    if label == "harmful" and (not yes or p.rejected is not True):
        return "harmful record without a violated category and a reject conclusion"
    if label == "benign" and (yes or p.rejected is not False):
        return "benign record with a violated category or without the safe conclusion"
    if sorted(cats) != yes:
        return f"'categories' {sorted(cats)} differ from the Yes lines {yes}"
    return None


def _check_r2d(text: str, label: str) -> str | None:
    if not text.lstrip().startswith(THINK_OPEN) or text.count(THINK_OPEN) != 1 or text.count(THINK_CLOSE) != 1:
        return "expected exactly one <think> ... </think> block at the start"
    steps = parse_r2d(text)
    close = [i for i, s in enumerate(steps) if s.text == THINK_CLOSE]
    think = steps[: close[0]]
    after = steps[close[0] + 1:]
    if not think:
        return "no reasoning steps inside <think>"
    if any(s.pivot is None for s in think):
        return "a reasoning step has no pivot after it"
    if steps[close[0]].pivot is None:
        return "no pivot after </think>"
    if not after or any(s.pivot is None for s in after) or not text.rstrip().endswith(tuple(PIVOTS)):
        return "the answer must be followed by a pivot"
    pivots = [s.pivot for s in think]
    if label == "benign" and PIVOT_UNSAFE in pivots:  # reconsidering ([RETHINK]) a scary-sounding request is fine
        return "benign record with an [UNSAFE] reasoning pivot"
    if label == "harmful" and not ({PIVOT_UNSAFE, PIVOT_RETHINK} & set(pivots)):
        return "harmful record whose reasoning never marks [UNSAFE] or [RETHINK]"
    return None


def check_dataset(directory: str | Path, *, min_benign_share: float = 0.3) -> CheckReport:
    """Format, hashes, unique ids, pivot placement, label balance. Errors are problems; warnings are advice."""
    directory = Path(directory)
    rep = CheckReport(str(directory), counts={k: Counter() for k in ("kind", "label", "style", "category", "source")})
    man = read_manifest(directory)
    seen: set[str] = set()
    for shard in man.shards:
        path = directory / shard.file
        if not path.is_file():
            rep.error(f"{path}: missing shard")
            continue
        if file_sha256(path) != shard.sha256:
            rep.error(f"{path}: sha256 differs from the manifest")
        n = 0
        for line, obj in iter_jsonl(path):
            n += 1
            try:
                rec = parse_record(obj, path=path, line=line)
            except InputError as e:
                rep.error(str(e))
                continue
            where = f"{path}:{line} ({rec.id})"
            if rec.id in seen:
                rep.error(f"{where}: duplicate id")
            seen.add(rec.id)
            if rec.method != man.method:
                rep.error(f"{where}: method {rec.method} but the manifest says {man.method}")
            if (rec.kind == "refusal") != (rec.label == "harmful"):
                rep.error(f"{where}: kind {rec.kind} does not match label {rec.label}")
            text = rec.messages[-1].content
            problem = _check_scot(text, rec.label, rec.categories) if rec.method == "scot" else _check_r2d(text, rec.label)
            if problem:
                rep.error(f"{where}: {problem}")
            for k in ("kind", "label", "style", "source"):
                rep.counts[k][getattr(rec, k)] += 1
            for c in rec.categories:
                rep.counts["category"][c] += 1
            rep.records += 1
        if n != shard.records:
            rep.error(f"{path}: {n} records, manifest says {shard.records}")
    if content_hash([s.sha256 for s in man.shards]) != man.content_hash:
        rep.error("content_hash does not match the shard hashes")
    if rep.records != man.counts.get("total", rep.records):
        rep.error(f"{rep.records} records, manifest counts say {man.counts.get('total')}")
    benign = rep.counts["label"]["benign"]
    if rep.records and benign / rep.records < min_benign_share:
        rep.warnings.append(f"only {benign / rep.records:.0%} benign (retain) records: expect over-refusal")
    if rep.records and rep.counts["label"]["harmful"] == 0:
        rep.warnings.append("no harmful (refusal) records")
    overlap = (getattr(man, "eval_overlap", None) or {}).get("count", 0)
    if overlap:
        rep.warnings.append(f"{overlap} training prompts are near-duplicates of evaluation prompts")
    return rep
