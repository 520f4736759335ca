"""Build a SCoT or R2D training set: plan -> teacher + retain answers -> shards + manifest.

Crash safety: every finished record is appended (and fsynced) to ``.work/journal.jsonl``; a
shard is written atomically once all its records exist, and the manifest last. Killed at any
point and run again with the same settings, a build skips what is done and ends with every
record exactly once, identical to an uninterrupted build (teachers and rule rewrites are seeded
per item; retain answers are cached and generated in fixed groups). Teacher-written benign twins
are journalled in ``.work/twins.jsonl`` as soon as each is written (or given up on), so a resumed
build neither asks for them again nor gets different ones. Only a verdict on the prompt (no valid
twin after the repairs) is given up on; when the endpoint itself fails (:class:`EndpointError`) the
build stops there with nothing journalled for that twin, and running it again resumes.

An LLM teacher never falls back quietly. A record it still fails on after the HTTP retries and the
repairs is journalled as failed, with the reason, and the build goes on with the other records;
its shard is not written, and the build ends with :class:`IncompleteBuildError` (no manifest) naming
how many failed. Run again, it retries only the failed records. With ``fallback="structured"`` the
offline structured teacher writes those records instead, and the manifest lists them per teacher
under ``fallbacks``.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..data._neardup import NearDuplicate, find_near_duplicates
from ..data._policy import Policy, load_policy
from ..data._schema import PromptRecord
from ..data._training import (
    MANIFEST, FORMAT_VERSION, Manifest, ShardInfo, TrainingRecord, content_hash, file_sha256, shard_name,
)
from ..errors import EndpointError, InputError, SafethinkError
from ..io import atomic_write_text
from ._evolve import TWIN_STYLE, LLMEvolver, RuleEvolver
from ._journal import Journal, shard_line, shard_ok
from ._plan import BuildConfig, PlanItem, eval_prompts_for, make_plan
from ._render import render_r2d, render_scot
from ._retain import RetainAnswerer
from ._structured import StructuredTeacher
from ._types import TeachFailure, TeachRequest

WORK = ".work"
Progress = Callable[[str, int, int], None]
"""progress(stage, done, total)."""


@dataclass
class BuildResult:
    manifest: Manifest
    out: Path
    built: int = 0
    """Records made in this run (0 when everything was already done)."""
    resumed: int = 0
    """Records recovered from an interrupted run."""
    near_duplicates: list[NearDuplicate] = field(default_factory=list)
    dropped: list[NearDuplicate] = field(default_factory=list)
    """With ``drop_eval_overlap``: the source prompts left out as near-duplicates of evaluation prompts."""
    teacher_stats: dict[str, Any] = field(default_factory=dict)
    twins: dict[str, int] = field(default_factory=dict)
    """With ``llm_twins``: benign twins the teacher wrote and those it failed on (skipped)."""
    fallbacks: dict[str, list[str]] = field(default_factory=dict)
    """With ``fallback="structured"``: per LLM teacher, the ids of the records the structured teacher wrote."""


class IncompleteBuildError(SafethinkError):
    """The teacher failed on some records after its retries; the others are kept for a resumed build."""

    def __init__(self, failed: dict[str, str], *, total: int, teacher: str, work: Path):
        first_id, first_error = next(iter(failed.items()))
        super().__init__(
            f"the teacher {teacher} failed on {len(failed)} of {total} records after its retries (first: "
            f"{first_id}: {first_error}). The {total - len(failed)} records done are kept in {work}; run the same "
            "command again to retry only the failed ones, or add --fallback structured to have the offline "
            "structured teacher write them (listed in the manifest under 'fallbacks')")
        self.failed = failed
        """Record id -> why it failed (also journalled in ``.work/journal.jsonl``)."""


def load_teacher(spec: str, policy: Policy, *, seed: int = 0, concurrency: int = 4, retag: str = "teacher") -> Any:
    """'structured' or 'openai:<model>@<url>'."""
    from ..models import parse_model_spec
    from ._types import TEACHERS

    if spec == "structured":
        return StructuredTeacher(policy, seed=seed)
    ms = parse_model_spec(spec)
    if ms.kind != "openai":
        raise SafethinkError(f"teacher {spec!r}: expected 'structured' or 'openai:<model>@<url>'")
    return TEACHERS.create("openai", policy=policy, model=ms.target, base_url=ms.base_url, concurrency=concurrency,
                           retag=retag)


def build_dataset(cfg: BuildConfig, out: str | Path, *, progress: Progress | None = None,
                  teacher: Any = None, retain_model: Any = None, cache_dir: str | Path | None = None,
                  overwrite: bool = False) -> BuildResult:
    """Build (or finish building) the training set ``cfg`` describes in ``out``."""
    out = Path(out)
    policy = load_policy(cfg.policy)
    state_path = out / WORK / "state.json"
    plan_hash = cfg.plan_hash()
    if overwrite and out.exists():
        for p in [out / MANIFEST, *out.glob("shard-*.jsonl")]:
            p.unlink()
        shutil.rmtree(out / WORK, ignore_errors=True)
    if (out / MANIFEST).is_file():
        from ..data._training import read_manifest

        man = read_manifest(out)
        if getattr(man, "plan_hash", None) != plan_hash:
            raise InputError("already holds a training set built with other settings; use another --out or --overwrite",
                             path=str(out))
        return BuildResult(man, out, twins=dict(man.counts.get("benign_twins") or {}))
    if state_path.is_file():
        if json.loads(state_path.read_text()).get("plan_hash") != plan_hash:
            raise InputError("holds an unfinished build with other settings; use another --out or --overwrite",
                             path=str(out))
    elif out.exists() and any(out.glob("shard-*.jsonl")):
        raise InputError("holds shards from an unknown build; use another --out or --overwrite", path=str(out))

    teacher = teacher or load_teacher(cfg.teacher, policy, seed=cfg.seed, concurrency=cfg.concurrency, retag=cfg.retag)
    is_llm = hasattr(teacher, "client")
    structured = teacher if isinstance(teacher, StructuredTeacher) else StructuredTeacher(policy, seed=cfg.seed)
    if cfg.llm_twins and not is_llm:
        raise InputError("llm_twins (--llm-twins) needs an LLM teacher (teacher 'openai:<model>@<url>'): a rule "
                         f"cannot make a harmful request benign; teacher {getattr(teacher, 'spec', cfg.teacher)!r} "
                         "is not one. With builtin:harmful the seed twins are added without it.")
    use_llm_evolver = cfg.evolve and (cfg.evolver == "teacher" or (cfg.evolver == "auto" and is_llm))
    rule_evolver = RuleEvolver(cfg.seed)
    dropped: list[NearDuplicate] = []
    plan = make_plan(cfg, policy, rule_rewrite=None if use_llm_evolver else rule_evolver.rewrite, dropped=dropped)
    if not plan:
        raise SafethinkError("nothing to build: no prompts")
    atomic_write_text(state_path, json.dumps({"plan_hash": plan_hash, "config": cfg.model_dump()}, indent=1))

    near: list[NearDuplicate] = []
    evals: list[PromptRecord] = []
    if cfg.check_eval_overlap:
        train = [PromptRecord(id=it.id, prompt=it.original, label=it.label, source=it.source)
                 for it in plan if it.style == "original"]
        evals = eval_prompts_for(cfg)
        near = find_near_duplicates(train, evals, threshold=cfg.overlap_threshold)

    evolver = (LLMEvolver(teacher.client, seed=cfg.seed, embedder=_maybe_embedder())
               if use_llm_evolver or cfg.llm_twins else None)
    writers = _Writers(teacher, evolver, rule_evolver, structured, fallback=cfg.fallback == "structured")
    answerer = RetainAnswerer(cfg.model, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                              cache_dir=cache_dir, model_obj=retain_model)
    journal = Journal(out / WORK / "journal.jsonl")
    twin_journal = Journal(out / WORK / "twins.jsonl")
    resumed = sum(journal.done(i) for i in journal.records)
    chunks = [plan[i:i + cfg.shard_size] for i in range(0, len(plan), cfg.shard_size)]
    built = 0
    done = 0
    shard_infos: list[ShardInfo] = []
    all_ids: list[str] = []
    for n, planned in enumerate(chunks):
        path = out / shard_name(n)
        chunk = _write_twins(planned, twin_journal, evolver, out / WORK) if cfg.llm_twins else planned
        skipped = len(planned) - len(chunk)
        ids = [it.id for it in chunk]
        all_ids += ids
        if not (path.is_file() and shard_ok(path, ids)):
            todo = [it for it in chunk if not journal.done(it.id)]
            step = max(cfg.batch_size, cfg.concurrency * 4)
            benign_chunk = [it for it in chunk if it.kind == "retain"]
            answers: dict[str, str] = {}
            if benign_chunk and any(it.kind == "retain" for it in todo):
                texts = answerer.answer([it.prompt for it in benign_chunk],  # type: ignore[misc]
                                        progress=(lambda k: progress("retain answers", k, len(benign_chunk)))
                                        if progress else None)
                answers = {it.id: a for it, a in zip(benign_chunk, texts)}
            for s in range(0, len(todo), step):
                recs = _make_records(todo[s:s + step], cfg, policy, writers, answers)
                journal.add(recs)
                built += sum("failed" not in r for r in recs)
                if progress:
                    progress("records", done + skipped + len(chunk) - len(todo) + s + len(recs), len(plan))
            if not all(journal.done(i) for i in ids):
                done += len(planned)
                continue  # a record failed: no shard until a resumed build writes it
            atomic_write_text(path, "".join(shard_line(journal.records[i]) for i in ids))
        done += len(planned)
        shard_infos.append(ShardInfo(file=path.name, sha256=file_sha256(path), records=len(chunk)))
    failed = {i: journal.records[i]["failed"] for i in all_ids if i in journal.records and not journal.done(i)}
    if failed:
        raise IncompleteBuildError(failed, total=len(all_ids), teacher=getattr(teacher, "spec", cfg.teacher),
                                   work=out / WORK)
    fallbacks = _fallbacks(all_ids, journal)
    if cfg.llm_twins and evals:  # twins exist only now; JBB benign, for one, is a set of twins itself
        near += find_near_duplicates(_written_twins(plan, twin_journal), evals,
                                     threshold=cfg.overlap_threshold)
    twins = _twin_summary(plan, twin_journal) if cfg.llm_twins else None
    manifest = _manifest(cfg, policy, teacher, shard_infos, out, plan_hash, near, twins, dropped, fallbacks)
    atomic_write_text(out / MANIFEST, manifest.model_dump_json(indent=1))
    shutil.rmtree(out / WORK, ignore_errors=True)
    stats = getattr(teacher, "stats", None)
    return BuildResult(manifest, out, built=built, resumed=resumed, near_duplicates=near, dropped=dropped,
                       teacher_stats={} if stats is None else {"calls": stats.calls, "repairs": stats.repairs,
                                                               "failures": stats.failures, "errors": stats.errors},
                       twins=dict(manifest.counts.get("benign_twins") or {}),
                       fallbacks={t: f["ids"] for t, f in fallbacks.items()})


def _fallbacks(ids: list[str], journal: Journal) -> dict[str, dict[str, Any]]:
    """Per failing teacher: how many records the structured teacher wrote instead, their ids and errors."""
    out: dict[str, dict[str, Any]] = {}
    for i in ids:
        fb = journal.records.get(i, {}).get("fallback")
        if fb:
            entry = out.setdefault(fb["teacher"], {"count": 0, "written_by": "structured", "ids": [], "errors": []})
            entry["count"] += 1
            entry["ids"].append(i)
            if len(entry["errors"]) < 20:
                entry["errors"].append({"id": i, "error": fb["error"]})
    return out


def _write_twins(chunk: list[PlanItem], journal: Journal, evolver: Any, work: Path) -> list[PlanItem]:
    """The chunk with each twin's prompt filled in by the teacher; twins it could not write are left out.

    An endpoint failure stops the build: the twin is not journalled, so a rerun asks for it again."""
    for it in chunk:
        if it.style == TWIN_STYLE and it.id not in journal.records:
            try:
                text, error = evolver.twin(it.original, it.id)
            except EndpointError as e:
                raise EndpointError(
                    f"the LLM teacher at {e.url} is unreachable or failing, so benign twin {it.id} was not "
                    f"written ({e}). The twins and records finished so far are kept in {work}; run the "
                    "same command again to resume once the endpoint is back", url=e.url) from e
            journal.add([{"id": it.id, "prompt": text, "twin_of": it.twin_of, "error": error}])
    out = []
    for it in chunk:
        if it.style == TWIN_STYLE:
            text = journal.records[it.id]["prompt"]
            if text is None:
                continue  # no rule fallback: a rewrite that keeps the harmful intent is no twin
            it = replace(it, prompt=text)
        out.append(it)
    return out


def _written_twins(plan: list[PlanItem], journal: Journal) -> list[PromptRecord]:
    """The twins the teacher wrote, as prompts (record ids), for the evaluation-overlap check."""
    return [PromptRecord(id=it.id, prompt=journal.records[it.id]["prompt"], label="benign", source=it.source)
            for it in plan if it.style == TWIN_STYLE and journal.records[it.id]["prompt"] is not None]


def _twin_summary(plan: list[PlanItem], journal: Journal) -> dict[str, Any]:
    entries = [(it, journal.records[it.id]) for it in plan if it.style == TWIN_STYLE]
    failed = [{"twin_of": it.twin_of, "error": e["error"]} for it, e in entries if e["prompt"] is None]
    return {"counts": {"written": len(entries) - len(failed), "skipped": len(failed)},
            "twin_of": {it.id: it.twin_of for it, e in entries if e["prompt"] is not None},
            "skipped": {"count": len(failed), "examples": failed[:20]}}


def _maybe_embedder() -> Any:
    try:
        from ..models._embed import Embedder, minilm_path

        minilm_path()
        return Embedder()
    except SafethinkError:
        return None  # few-shot examples are then taken in file order


@dataclass
class _Writers:
    """Who writes a record: the teacher, the (LLM) evolver, and the offline stand-ins."""

    teacher: Any
    evolver: Any
    rules: RuleEvolver
    structured: StructuredTeacher
    """Names the categories of LLM traces without any; writes failed records when ``fallback``."""
    fallback: bool


def _teach(teacher: Any, method: str, reqs: list[TeachRequest]) -> list:
    """Outputs or :class:`TeachFailure` per request (teachers without ``attempt`` never fail per record)."""
    if not reqs:
        return []
    attempt = getattr(teacher, "attempt", None)
    return attempt(method, reqs) if attempt is not None else getattr(teacher, method)(reqs)


def _make_records(items: list[PlanItem], cfg: BuildConfig, policy: Policy, w: _Writers,
                  answers: dict[str, str]) -> list[dict]:
    """Journal entries for ``items``, in order: the record; the record the structured teacher wrote
    for one the LLM teacher failed on (with ``fallback``); or ``{"id", "failed": why}``."""
    prompts: dict[str, str] = {}
    failed: dict[str, str] = {}
    for it in items:
        if it.prompt is not None:
            prompts[it.id] = it.prompt
            continue
        try:
            prompts[it.id] = w.evolver.rewrite(it.original, it.style, it.id)
        except EndpointError as e:  # the rewrite is part of the record: it failed with the endpoint
            failed[it.id] = f"rewrite: {type(e).__name__}: {e}"
    # A twin is a request of its own: its ``original`` is the harmful prompt, whose intent is not its intent.
    evolved = {it.id for it in items if it.style not in ("original", TWIN_STYLE)}

    def request(it: PlanItem) -> TeachRequest:
        return TeachRequest(item_id=it.id, prompt=prompts[it.id], label=it.label,
                            original=it.original if it.id in evolved else None, categories=it.categories,
                            seed=cfg.seed, style=it.style if it.id in evolved else "original")

    asked = [it for it in items if it.id not in failed]
    outs = dict(zip([it.id for it in asked], _teach(w.teacher, cfg.method, [request(it) for it in asked])))
    failed.update({rid: o.error for rid, o in outs.items() if isinstance(o, TeachFailure)})
    if failed and w.fallback:
        redo = [it for it in items if it.id in failed]
        for it in redo:
            if it.id not in prompts:  # the LLM rewrite itself failed: the rules write the variant
                prompts[it.id] = w.rules.rewrite(it.original, it.style, it.id)
        outs.update(zip([it.id for it in redo], getattr(w.structured, cfg.method)([request(it) for it in redo])))
    need_cats = [it for it in items if it.label == "harmful" and cfg.method == "r2d" and it.id in outs
                 and not isinstance(outs[it.id], TeachFailure) and not outs[it.id].categories]
    filled: dict[str, list[str]] = {}
    if need_cats:  # an LLM trace without categories: the offline classifier names them
        filled = dict(zip([it.id for it in need_cats], w.structured.categories([request(it) for it in need_cats])))
    recs = []
    for it in items:
        o = outs.get(it.id)
        if o is None or isinstance(o, TeachFailure):
            recs.append({"id": it.id, "failed": failed[it.id]})
            continue
        if cfg.method == "scot":
            cats = o.violated
            response = answers[it.id] if it.kind == "retain" else (o.refusal or "")
            text = render_scot(o, response, policy)
        else:
            cats = filled.get(it.id, o.categories) if it.label == "harmful" else []
            text = render_r2d(o, answers[it.id] if it.kind == "retain" else (o.answer or ""))
        msgs = ([{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []) + [
            {"role": "user", "content": prompts[it.id]}, {"role": "assistant", "content": text}]
        rec = TrainingRecord(id=it.id, method=cfg.method, kind=it.kind, label=it.label, categories=list(cats),
                             style=it.style, source=it.source, messages=msgs).model_dump()  # type: ignore[arg-type]
        if it.id in failed:
            rec["fallback"] = {"teacher": getattr(w.teacher, "spec", cfg.teacher), "error": failed[it.id]}
        recs.append(rec)
    return recs


def _manifest(cfg: BuildConfig, policy: Policy, teacher: Any, shards: list[ShardInfo], out: Path,
              plan_hash: str, near: list[NearDuplicate], twins: dict[str, Any] | None = None,
              dropped: list[NearDuplicate] | None = None, fallbacks: dict[str, Any] | None = None) -> Manifest:
    c: dict[str, Counter] = {k: Counter() for k in ("kind", "label", "category", "style", "source")}
    for s in shards:
        with (out / s.file).open(encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                for k in ("kind", "label", "style", "source"):
                    c[k][r[k]] += 1
                for cat in r["categories"]:
                    c["category"][cat] += 1
    counts = {"total": sum(s.records for s in shards), **{f"by_{k}": dict(sorted(v.items())) for k, v in c.items()}}
    extra: dict[str, Any] = {}
    if twins is not None:
        counts["benign_twins"] = twins["counts"]
        extra = {"twin_of": twins["twin_of"], "twins_skipped": twins["skipped"]}
    if hasattr(teacher, "client"):  # an LLM teacher: which records it did not write (none, normally)
        extra["fallbacks"] = fallbacks or {}
    # The attack styles trained on (evaluation reports seen vs unseen attacks); twins are not attacks.
    styles = sorted(s for s in c["style"] if s not in ("original", TWIN_STYLE))
    return Manifest(
        method=cfg.method, counts=counts, teacher=getattr(teacher, "spec", cfg.teacher), seed=cfg.seed,
        policy=policy.ref(), styles=styles, shards=shards, content_hash=content_hash([s.sha256 for s in shards]),
        format_version=FORMAT_VERSION, plan_hash=plan_hash, retain_model=cfg.model, config=cfg.model_dump(),
        eval_overlap={"count": len(near), "threshold": cfg.overlap_threshold, "examples": [vars(n) for n in near[:20]],
                      **({"dropped": len(dropped), "dropped_examples": [vars(n) for n in dropped[:20]]}
                         if cfg.drop_eval_overlap else {})}, **extra,
    )
