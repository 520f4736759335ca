"""The build plan: which prompts, in which styles, become which records (deterministic from config)."""

from __future__ import annotations

import glob
import hashlib
import json
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..data._loaders import FRAME_TWINS, default_data_dir, load_prompts
from ..data._sources import HF_ALIASES, SOURCES
from ..errors import InputError
from ..io import check_text
from ..data._neardup import NearDuplicate, find_near_duplicates, load_eval_prompts
from ..data._policy import Policy
from ..data._schema import PromptRecord
from ._evolve import STYLES, TWIN_STYLE, norm_prompt


class BuildConfig(BaseModel):
    """Settings of ``safethink data build`` (recorded in the manifest)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["scot", "r2d"] = Field(description="Reasoning format of the assistant turns.")
    harmful: list[str] = Field(min_length=1, description="Harmful prompt sources (names, hub ids, builtin:*, files).")
    benign: list[str] = Field(min_length=1, description="Benign prompt sources for the retain set.")
    teacher: str = Field(default="structured", description="'structured' (offline) or 'openai:<model>@<url>'.")
    evolve: list[str] = Field(default_factory=list, description="Evolution styles; each harmful prompt adds one variant.")
    evolver: Literal["auto", "rule", "teacher"] = Field(
        default="auto", description="Who rewrites: 'teacher' (the LLM), 'rule' (offline); auto = teacher if it is an LLM.")
    model: str = Field(default="smollm2-135m", description="Target model that answers the retain prompts.")
    limit: int | None = Field(default=None, ge=1, description="Harmful prompts taken per harmful source.")
    benign_limit: int | None = Field(default=None, ge=1, description="Benign prompts read per benign source.")
    retain_ratio: float = Field(default=1.0, gt=0, description="Retain records per refusal record (paper: 1).")
    twins: bool = Field(default=True, description="With builtin:harmful, add its benign twins and borderline prompts.")
    llm_twins: bool = Field(
        default=False, description="With an LLM teacher, the teacher writes a benign twin (same topic, benign intent) "
                                   "of every harmful prompt that has no built-in twin; it joins the retain side.")
    seed: int = 0
    policy: str | None = Field(default=None, description="Policy YAML path; None = SCoT taxonomy.")
    data_dir: str | None = Field(default=None, description="Folder with public dataset copies (else $SAFETHINK_DATA_DIR).")
    shard_size: int = Field(default=256, ge=1, description="Records per shard (the unit of atomic progress).")
    max_new_tokens: int = Field(default=128, ge=1, description="Cap on retain answers.")
    batch_size: int = Field(default=16, ge=1, description="Retain generation batch size.")
    concurrency: int = Field(default=4, ge=1, description="Parallel requests to an HTTP teacher.")
    fallback: Literal["none", "structured"] = Field(
        default="none", description="What writes a record the LLM teacher still fails on after its retries: "
                                    "'none' (the build ends with an error naming the failed records; run it again "
                                    "to retry them) or 'structured' (the offline structured teacher; the manifest "
                                    "lists those records under 'fallbacks').")
    retag: str = Field(default="teacher", description="R2D re-tagging: none, heuristic, teacher, or openai:<model>@<url>.")
    system_prompt: str | None = Field(default=None, description="Optional system message on every record.")
    check_eval_overlap: bool = Field(default=True, description="Warn about near-duplicates of evaluation prompts.")
    drop_eval_overlap: bool = Field(
        default=False, description="Drop source prompts that are near-duplicates of evaluation prompts (JBB, XSTest, "
                                   "HarmBench, StrongREJECT, where available offline) before limits are applied.")
    overlap_threshold: float = Field(
        default=0.8, gt=0.0, le=1.0,
        description="Word-set Jaccard similarity at which a training prompt counts as a near-duplicate of an "
                    "evaluation prompt (for the warning and for drop_eval_overlap).")

    @field_validator("evolve")
    @classmethod
    def _attack_styles(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if s not in STYLES]
        if bad:  # benign_twin among them would label benign rewrites harmful
            raise ValueError(f"unknown evolution style(s) {bad}; expected some of {', '.join(STYLES)}")
        return v

    def plan_hash(self) -> str:
        """Hash of the settings that decide which records are built (not how fast)."""
        # fallback decides who writes a failed record, not which records exist: a failed build can be
        # resumed with --fallback structured
        keep = self.model_dump(exclude={"concurrency", "check_eval_overlap", "fallback"})
        for opt in ("llm_twins", "drop_eval_overlap"):
            if not keep[opt]:
                del keep[opt]  # sets built before the option existed keep their hash
        if not self.drop_eval_overlap or self.overlap_threshold == 0.8:
            del keep["overlap_threshold"]  # it decides records only when near-duplicates are dropped
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class PlanItem:
    id: str
    kind: Literal["refusal", "retain"]
    label: Literal["harmful", "benign"]
    prompt: str | None
    """Text sent to the model; None when an LLM evolver writes it at build time."""
    original: str
    style: str
    source: str
    categories: tuple[str, ...]
    """Policy ids from dataset metadata (may be empty)."""
    twin_of: str | None = None
    """For a teacher-written benign twin: the id of the harmful prompt's refusal item."""


def _dedup(records: list[PromptRecord], seen: set[str]) -> list[PromptRecord]:
    out = []
    for r in records:
        k = norm_prompt(r.user_text())
        if k and k not in seen:
            seen.add(k)
            out.append(r)
    return out


def eval_prompts_for(cfg: BuildConfig) -> list[PromptRecord]:
    """The evaluation prompts a training set built with ``cfg`` is checked against: every evaluation set
    available offline, except those the set is built from."""
    own = set(cfg.harmful) | set(cfg.benign)
    return [r for r in load_eval_prompts(data_dir=cfg.data_dir) if r.source not in own]


def source_files(source: str, data_dir: str | None = None) -> list[Path]:
    """The local files a prompt source reads: the file it names, or a named source's copies under the
    data dir (``data_dir`` or ``$SAFETHINK_DATA_DIR``); built-in sets and hub-cache copies are not listed."""
    inner = source.removeprefix(FRAME_TWINS)
    path = Path(inner).expanduser()
    if path.is_file():
        return [path]
    spec = SOURCES.get(HF_ALIASES.get(inner.lower(), inner.lower()))
    root = default_data_dir(data_dir)
    if spec is None or root is None:
        return []
    extra = sorted(glob.glob(str(root / spec.targets_file))) if spec.targets_file else []
    for pattern in spec.files:
        files = sorted(glob.glob(str(root / pattern)))
        if files:
            return [Path(f) for f in files + extra]
    return []


def check_sources(sources: list[str], data_dir: str | None = None) -> None:
    """Raise :class:`InputError` (file, line, byte offset) now for a source file that is not UTF-8."""
    for src in sources:
        for f in source_files(src, data_dir):
            check_text(f)


def load_sources(cfg: BuildConfig, dropped: list[NearDuplicate] | None = None
                 ) -> tuple[list[PromptRecord], list[PromptRecord], list[PromptRecord]]:
    """(harmful, forced benign: twins + borderline, benign pool), deduplicated by normalised text. With
    ``drop_eval_overlap``, near-duplicates of evaluation prompts are removed first (and appended to
    ``dropped``); ``limit`` / ``benign_limit`` then sample among the rest."""
    evals = eval_prompts_for(cfg) if cfg.drop_eval_overlap else []

    def load(src: str, label: Literal["harmful", "benign"], limit: int | None) -> list[PromptRecord]:
        try:
            return load_one(src, label, limit)
        except UnicodeDecodeError as e:  # name the file and line instead of a traceback
            check_sources([src], cfg.data_dir)
            raise InputError(f"{src}: a file of this source is not valid UTF-8 ({e.reason}); save it as UTF-8") from None

    def load_one(src: str, label: Literal["harmful", "benign"], limit: int | None) -> list[PromptRecord]:
        if not cfg.drop_eval_overlap:
            return load_prompts(src, label=label, limit=limit, seed=cfg.seed, data_dir=cfg.data_dir)
        records = load_prompts(src, label=label, seed=cfg.seed, data_dir=cfg.data_dir)
        near = find_near_duplicates(records, evals, threshold=cfg.overlap_threshold)
        if dropped is not None:
            dropped.extend(near)
        bad = {n.train_id for n in near}
        records = [r for r in records if r.id not in bad]
        if limit is not None and limit < len(records):  # the same sample load_prompts draws
            records = [records[i] for i in sorted(random.Random(cfg.seed).sample(range(len(records)), limit))]
        return records

    seen: set[str] = set()
    harmful: list[PromptRecord] = []
    for src in cfg.harmful:
        harmful += load(src, "harmful", cfg.limit)
    harmful = _dedup(harmful, seen)
    forced: list[PromptRecord] = []
    if cfg.twins and "builtin:harmful" in cfg.harmful:
        # The twin of every chosen harmful seed (same topic, benign intent) and as many
        # safe-but-scary prompts: without them a small model learns the topic, not the intent.
        chosen = {r.meta.get("twin") for r in harmful if r.source == "builtin:harmful"}
        if "builtin:twins" not in cfg.benign:
            forced += [t for t in load("builtin:twins", "benign", None) if t.meta.get("seed_id") in chosen]
        if "builtin:borderline" not in cfg.benign:
            border = load("builtin:borderline", "benign", None)
            keep = sorted(random.Random(f"{cfg.seed}:borderline").sample(range(len(border)), min(len(chosen), len(border))))
            forced += [border[i] for i in keep]
    forced = _dedup(forced, seen)
    pool: list[PromptRecord] = []
    for src in cfg.benign:
        pool += load(src, "benign", cfg.benign_limit)
    pool = _dedup(pool, seen)
    return harmful, forced, pool


def has_builtin_twin(cfg: BuildConfig, h: PromptRecord) -> bool:
    """Whether ``load_sources`` pairs this harmful prompt with a seed twin already."""
    return cfg.twins and h.source == "builtin:harmful" and bool(h.meta.get("twin"))


def make_plan(cfg: BuildConfig, policy: Policy, *, rule_rewrite=None,
              dropped: list[NearDuplicate] | None = None) -> list[PlanItem]:
    """Refusal items (each harmful prompt + one evolved variant) then retain items, interleaved
    so every shard mixes both. ``rule_rewrite(prompt, style, id)`` fills offline rewrites now.
    With ``llm_twins`` each harmful prompt without a built-in twin gets a retain item whose prompt
    (None here) the teacher writes at build time; like built-in twins, these are always kept. Prompts that
    ``drop_eval_overlap`` removes are appended to ``dropped``."""
    harmful, forced, pool = load_sources(cfg, dropped)
    refusals: list[PlanItem] = []
    twins: list[PlanItem] = []
    twin_source: dict[int, PlanItem] = {}  # id(twin item) -> its refusal item, to follow renames below
    for h in harmful:
        cats = tuple(policy.map_category(h.category))
        first = PlanItem(f"{h.id}#original", "refusal", "harmful", h.user_text(), h.user_text(),
                         "original", h.source, cats)
        refusals.append(first)
        if cfg.evolve:
            style = random.Random(f"{cfg.seed}:style:{h.id}").choice(cfg.evolve)
            text = rule_rewrite(h.user_text(), style, h.id) if rule_rewrite else None
            refusals.append(PlanItem(f"{h.id}#{style}", "refusal", "harmful", text, h.user_text(), style,
                                     h.source, cats))
        if cfg.llm_twins and not has_builtin_twin(cfg, h):
            twins.append(PlanItem(f"{h.id}#{TWIN_STYLE}", "retain", "benign", None, h.user_text(), TWIN_STYLE,
                                  h.source, (), twin_of=first.id))
            twin_source[id(twins[-1])] = first
    n_fixed = len(forced) + len(twins)
    n_retain = max(round(cfg.retain_ratio * len(refusals)), n_fixed)
    k = min(max(n_retain - n_fixed, 0), len(pool))
    picked = sorted(random.Random(f"{cfg.seed}:retain").sample(range(len(pool)), k))
    benign = forced + [pool[i] for i in picked]
    retains = [PlanItem(f"{b.id}#retain", "retain", "benign", b.user_text(), b.user_text(), "original", b.source, ())
               for b in benign]
    retains = retains[:len(forced)] + twins + retains[len(forced):]
    # Interleave by position so that any prefix of the set (a shard, a resumed run) is balanced.
    merged: list[tuple[float, int, PlanItem]] = []
    for seq, items in ((0, refusals), (1, retains)):
        merged += [((i + 0.5) / len(items), seq, it) for i, it in enumerate(items)]
    plan = [it for _, _, it in sorted(merged, key=lambda t: (t[0], t[1]))]
    ids: set[str] = set()
    final: dict[int, str] = {}
    for it in plan:  # distinct sources can reuse ids (two files called data.csv): keep them apart
        new_id, n = it.id, 1
        while new_id in ids:
            n += 1
            new_id = f"{it.id}~{n}"
        ids.add(new_id)
        final[id(it)] = new_id
    out = []
    for it in plan:
        twin_of = final[id(twin_source[id(it)])] if id(it) in twin_source else it.twin_of
        out.append(it if (final[id(it)], twin_of) == (it.id, it.twin_of)
                   else replace(it, id=final[id(it)], twin_of=twin_of))
    return out
