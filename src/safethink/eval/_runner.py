"""Run an evaluation spec: attack, generate through the guard, decode, judge and store every attempt.

The runner never prints; it reports progress through a callback so the CLI can draw bars.
"""

from __future__ import annotations

import inspect
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import SafethinkError, SpecError
from ..guard import GuardedOutput, ReasoningMode, leaked
from ..judges._base import JudgeInput, Verdict, judge_measures
from ..judges._no_answer import judge_answers
from ._answers import SharedAnswers
from ._plan import (
    VERBATIM, Cell, build_attack, build_guard, build_judges, check_names, generation_json, import_plugins,
    load_dataset, model_styles, plan_cells,
)
from ._spec import EvalSpec
from ._store import Attempt, ResultStore, adapter_hash, attempt_key, defence_key


@dataclass(frozen=True)
class ProgressEvent:
    """What the runner is doing, for progress displays.

    ``plan``: ``total`` attempts to run (``done`` already stored); ``load``: loading ``message``;
    ``cell``: starting ``cell`` with ``total`` pending attempts; ``advance``: ``n`` attempts stored;
    ``judge``: re-judging ``total`` stored attempts for a judge added later.
    """

    kind: Literal["plan", "load", "cell", "advance", "judge"]
    total: int = 0
    done: int = 0
    n: int = 0
    cell: str = ""
    message: str = ""


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass(frozen=True)
class EvalResult:
    run_id: str
    out_dir: Path
    store_path: Path
    planned: int
    """Attempts in the matrix."""
    skipped: int
    """Attempts already stored before this run (resumed)."""
    added: int
    """Attempts this run stored."""
    rejudged: int = 0
    """Stored attempts that got a verdict from a judge added since they were run."""


CHUNK_BATCHES = 4
"""Generation batches per chunk of attempts: a chunk is attacked, generated, judged and stored at once, so a crash
loses at most one chunk's work."""


def run_eval(spec: EvalSpec, *, progress: ProgressCallback | None = None,
             models: dict[str, Any] | None = None) -> EvalResult:
    """Run (or resume) every attempt of the spec's matrix and store it; see :class:`EvalResult`.

    ``models`` maps a model entry's display name to an already loaded :class:`ChatModel` (for
    callers that hold one, e.g. right after training); other models are loaded from their spec,
    once each, and closed when their cells are done.
    """
    preloaded = dict(models or {})
    unknown = set(preloaded) - {m.display for m in spec.models}
    if unknown:
        raise SpecError(f"models= names {sorted(unknown)} that are not in the spec's models")
    emit = progress or (lambda _e: None)
    import_plugins(spec)
    check_names(spec)
    gen_cfg = spec.generation.to_config(spec.seed)
    gen_json = generation_json(spec)

    datasets = {ds.key: load_dataset(ds, f"datasets[{i}]", spec.seed) for i, ds in enumerate(spec.datasets)}
    attacks = {a.key: build_attack(a, f"attacks[{i}]") for i, a in enumerate(spec.attacks)}
    guards = {d.key: build_guard(d, f"defences[{i}]") for i, d in enumerate(spec.defences)}
    judges = build_judges(spec)
    hashes = {(m.spec, m.adapter): adapter_hash(m.adapter) for m in spec.models}
    dkeys = {d.key: defence_key(d.args, d.key) for d in spec.defences}
    styles = {(m.spec, m.adapter): model_styles(m) for m in spec.models}

    cells = plan_cells(spec, datasets)
    if VERBATIM.key not in attacks and any(c.attack is VERBATIM for c in cells):
        attacks[VERBATIM.key] = build_attack(VERBATIM, "attacks (verbatim, for benign records)")
    with ResultStore(spec.store_path) as store:
        other = store.generation_configs() - {gen_json}
        if other:
            raise SpecError(
                f"{store.path} holds attempts generated with different settings ({sorted(other)[0]}); "
                "results with different generation settings must not be mixed: use another --out"
            )
        for c in cells:
            mk = (c.model.spec, c.model.adapter)
            c.keys = [attempt_key(c.model.spec, hashes[mk], dkeys[c.defence.key], c.attack.key, c.dataset.key, r.id, spec.seed)
                      for r in c.records]
            done = store.done_keys(c.keys)
            # Longest requests first: each batch the backend gets then holds requests of similar length, which
            # it can generate without padding short ones to a long one (attempt keys do not depend on order).
            c.pending = sorted((i for i, k in enumerate(c.keys) if k not in done),
                               key=lambda i, c=c: -_request_chars(c.records[i]))
        planned = sum(len(c.keys) for c in cells)
        todo = sum(len(c.pending) for c in cells)
        emit(ProgressEvent("plan", total=todo, done=planned - todo))

        run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        store.start_run(run_id, spec.model_dump(mode="json"))
        added = 0
        for m in spec.models:
            mk = (m.spec, m.adapter)
            mine = [c for c in cells if c.model is m and c.pending]
            if not mine:
                continue
            if m.display in preloaded:
                model = preloaded[m.display]
            else:
                emit(ProgressEvent("load", message=m.display))
                from ..models import load_model

                model = load_model(m.spec, adapter=m.adapter, **m.options)
            # Defences that ask the model the same thing share one greedy answer (kept in the store).
            dtype = str(getattr(getattr(model, "model", None), "dtype", ""))  # what "auto" chose on this machine
            model = SharedAnswers(model, store, [m.spec, hashes[mk], m.options, dtype])
            try:
                # Chunks span cells of the same defence, so small cells still fill a batch (batch size is the
                # main lever on generation speed); a chunk holds several batches, which the backend regroups by
                # prompt length (attack templates differ in length), and is stored as soon as it is judged.
                chunk = gen_cfg.batch_size * CHUNK_BATCHES
                for d in spec.defences:
                    queue = [(c, i) for c in mine if c.defence is d for i in c.pending]
                    if not queue:
                        continue
                    title = f"{m.display} | {d.display}"
                    emit(ProgressEvent("cell", total=len(queue), cell=title))
                    for start in range(0, len(queue), chunk):
                        items = queue[start:start + chunk]
                        rows = _run_batch(items, model, attacks, guards[d.key], judges, gen_cfg, spec.seed,
                                          run_id, hashes[mk], styles[mk], gen_json)
                        added += store.add(rows)
                        emit(ProgressEvent("advance", n=len(items), cell=title))
            finally:
                close = getattr(model._model, "close", None)
                if close and m.display not in preloaded:
                    close()
        rejudged = _backfill_verdicts(store, [k for c in cells for k in c.keys], judges, emit)
        store.finish_run(run_id, added)
    return EvalResult(run_id=run_id, out_dir=spec.out_dir, store_path=spec.store_path, planned=planned,
                      skipped=planned - todo, added=added, rejudged=rejudged)


def _request_chars(record: Any) -> int:
    """A request's length in characters as sent, context and earlier turns included (orders a cell's requests)."""
    return sum(len(m["content"]) for m in record.messages())


def _run_batch(items: list[tuple[Cell, int]], model: Any, attacks: dict[str, Any], guard: Any,
               judges: dict[str, Any], gen_cfg: Any, seed: int, run_id: str, a_hash: str, styles: list[str],
               gen_json: str) -> list[Attempt]:
    """Attack, generate, decode and judge one batch (possibly spanning cells); return its rows."""
    import json

    t0 = time.perf_counter()
    prepared: list[Any] = [None] * len(items)
    groups: dict[int, list[int]] = {}
    for pos, (c, _i) in enumerate(items):
        groups.setdefault(id(c), []).append(pos)
    for positions in groups.values():  # one prepare() call per cell, so attacks can batch their work
        c = items[positions[0]][0]
        attack = attacks[c.attack.key]
        recs = [c.records[items[p][1]] for p in positions]
        target = GuardedTarget(model, guard) if getattr(attack, "needs_target", False) else None
        out = attack.prepare(recs, seed=seed, target=target)
        by_id = {p.record_id: p for p in out}
        missing = [r.id for r in recs if r.id not in by_id]
        if missing or len(out) != len(recs):
            raise SafethinkError(f"attack {c.attack.name!r} returned {len(out)} prompts for {len(recs)} records "
                                 f"(missing ids: {missing[:5]})")
        for p, r in zip(positions, recs):
            prepared[p] = by_id[r.id]
    t1 = time.perf_counter()
    convs = [p.messages for p in prepared]
    prefixes = [p.prefix for p in prepared]
    kwargs: dict[str, Any] = {}
    guard_name = items[0][0].defence.guard
    if any(prefixes):
        if "prefixes" not in inspect.signature(guard.generate).parameters:
            needs = sorted({c.attack.name for (c, _), p in zip(items, prefixes) if p})
            raise SpecError(f"guard {guard_name!r} cannot prefill the answer, which attack(s) {needs} need")
        kwargs["prefixes"] = prefixes
    outs = guard.generate(model, convs, gen_cfg, **kwargs)
    if len(outs) != len(convs):
        raise SafethinkError(f"guard {guard_name!r} returned {len(outs)} outputs for {len(convs)} conversations")
    t2 = time.perf_counter()
    recs = [c.records[i] for c, i in items]
    # Judged: what the user sees, i.e. the guard's visible text (o.text, never o.raw), decoded by the attack.
    decoded = [attacks[c.attack.key].decode_response(o.text) for (c, _), o in zip(items, outs)]
    inputs = [_judge_input(r.prompt, p.prefix, d, p.messages) for r, p, d in zip(recs, prepared, decoded)]
    verdicts: list[dict[str, dict[str, Any]]] = [{} for _ in items]
    for key, judge in judges.items():
        for v, out in zip(_judge(judge, key, inputs), verdicts):
            out[key] = _verdict_json(v, judge)
    t3 = time.perf_counter()
    n = len(items)
    guard_build = getattr(guard, "build_spec", {"name": guard_name, "args": items[0][0].defence.args})
    gen = json.loads(gen_json)
    rows = []
    for (c, i), r, p, o, d, v in zip(items, recs, prepared, outs, decoded, verdicts):
        rows.append(Attempt(
            attempt_key=c.keys[i], run_id=run_id,
            model_spec=c.model.spec, model_name=c.model.display, adapter=c.model.adapter, adapter_hash=a_hash,
            model_styles=styles,
            defence=c.defence.guard, defence_name=c.defence.display,
            defence_spec=json.loads(c.defence.key), guard_build=guard_build,
            attack=c.attack.name, attack_name=c.attack.display, attack_spec={"name": c.attack.name, "args": c.attack.args},
            attack_params=p.params, attack_seed=p.seed, attack_meta=p.meta,
            attack_style=c.attack.style or p.meta.get("style") or p.meta.get("technique") or c.attack.name,
            dataset=c.dataset.display, dataset_spec=json.loads(c.dataset.key), record_id=r.id, label=r.label,
            category=r.category, behaviour=r.prompt, seed=seed, generation=gen,
            messages=p.messages, prefix=p.prefix,
            raw_output=o.raw, visible_output=o.text, decoded_output=d, reasoning=o.reasoning,
            guard_action=o.action, finish_reason=o.finish_reason, guard_info=o.info, verdicts=v,
            attack_seconds=(t1 - t0) / n, generate_seconds=(t2 - t1) / n, judge_seconds=(t3 - t2) / n,
            flagged=list(o.flagged), leak=shows_flagged(o, d, c.defence.reasoning),
        ))
    return rows


def returned_text(out: GuardedOutput, reasoning: ReasoningMode = "none") -> str:
    """What the user is given: the visible answer, after the reasoning the deployment shows
    (``reasoning``, as ``safethink serve --reasoning``: none by default)."""
    shown = out.shown_reasoning(reasoning)
    return f"{shown}\n\n{out.text}" if shown else out.text


def shows_flagged(out: GuardedOutput, decoded: str, reasoning: ReasoningMode = "none") -> bool:
    """Did the user get to see a text the guard stopped: in what was returned, or in that answer once
    the attack's own decoding (base64, a cipher) is applied to it, as the attacker would?"""
    return bool(out.flagged) and any(leaked(t, out.flagged) for t in (returned_text(out, reasoning), decoded))


class GuardedTarget:
    """The target as an adaptive attack (PAIR, TAP) sees it: answers come through the defence.

    White-box attacks (GCG) read the underlying model's attributes (``.model``, ``.tokenizer``),
    which pass through unchanged.
    """

    def __init__(self, model: Any, guard: Any):
        self._model, self._guard = model, guard
        self.spec = model.spec

    def generate(self, conversations, config=None, *, prefixes=None, hook=None, progress=None):
        from ..models import Completion, GenerationConfig

        if prefixes is not None or hook is not None:  # prefilling / token hooks bypass the guard
            return self._model.generate(conversations, config or GenerationConfig(), prefixes=prefixes,
                                        hook=hook, progress=progress)
        outs = self._guard.generate(self._model, list(conversations), config or GenerationConfig(), progress=progress)
        return [Completion(text=o.text, raw_text=o.raw,
                           finish_reason=o.finish_reason if o.finish_reason in ("stop", "length", "hook") else "stop")
                for o in outs]

    def close(self) -> None:  # the runner owns the model's lifetime
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def _judge_input(request: str, prefix: str, decoded: str, messages: list[dict[str, str]]) -> JudgeInput:
    return JudgeInput(prompt=request, response=prefix + decoded, sent_prompt=_last_user(messages), prefix=prefix)


def _judge(judge: Any, key: str, inputs: list[JudgeInput]) -> list[Verdict]:
    """Every answer judged through the one no-answer rule (:func:`~safethink.judges.judge_answers`)."""
    try:
        return judge_answers(judge, inputs)
    except SafethinkError as e:
        raise SafethinkError(f"judge {key!r}: {e}") from None


def _verdict_json(v: Verdict, judge: Any) -> dict[str, Any]:
    """The stored verdict, with what its judge measures (so the report names the metric from the log alone)."""
    return {**v.to_json(), "measures": judge_measures(judge)}


def _last_user(messages: list[dict[str, str]]) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


def _backfill_verdicts(store: ResultStore, keys: list[str], judges: dict[str, Any], emit: ProgressCallback) -> int:
    """Give stored attempts a verdict from judges added to the spec after they were run."""
    stale = store.missing_verdicts(list(judges)) & set(keys)
    if not stale:
        return 0
    todo = [a for a in store.attempts() if a.attempt_key in stale]
    emit(ProgressEvent("judge", total=len(todo)))
    for start in range(0, len(todo), 64):
        chunk = todo[start:start + 64]
        for key, judge in judges.items():
            need = [a for a in chunk if key not in a.verdicts]
            if not need:
                continue
            inputs = [_judge_input(a.behaviour, a.prefix, a.decoded_output, a.messages) for a in need]
            for a, v in zip(need, _judge(judge, key, inputs)):
                a.verdicts[key] = _verdict_json(v, judge)
        store.update_verdicts([(a.attempt_key, a.verdicts) for a in chunk])
        emit(ProgressEvent("advance", n=len(chunk), cell="re-judging"))
    return len(todo)
