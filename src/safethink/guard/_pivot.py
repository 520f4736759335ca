"""``r2d-pivot``: act on R2D safety pivots while the model decodes.

The R2D papers train pivots but never act on them. This guard watches every decoded token
through the backend's :class:`~safethink.models.TokenHook`; when a pivot it is told to act on
appears ([UNSAFE], optionally [RETHINK]) it stops that row at once and either

- ``halt``: answers with a refusal that names the concern by the policy categories the flagged step
  mentions (``illicit/violent``), or a fixed generic sentence when it names none, or
- ``rollback``: keeps the text up to the end of the last [SAFE] step and makes the model continue
  from there with a refusal opener (one more, short, generation with ``prefixes=``).

What the guard stopped is never shown: not quoted in the refusal, and kept out of the visible text
(``GuardedOutput.flagged`` holds it for leak checks). Pivots and the think block never reach the
visible text either. By default the guard fails closed: an answer that ends without a final [SAFE]
pivot (or leaves ``<think>`` open) is replaced with a refusal; ``fail_open=True`` shows it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

from ..data._formats import PIVOT_RETHINK, PIVOT_SAFE, PIVOT_UNSAFE, PIVOTS, THINK_CLOSE, THINK_OPEN, strip_r2d
from ..errors import SpecError
from ..models import ChatModel, Completion, Conversation, GenerationConfig, ProgressFn, TokenEvent
from ._base import GUARDS, GuardedOutput
from ._core import (
    GuardBase,
    GuardKind,
    categories_in,
    concern_message,
    passthrough,
    policy_ids,
    positive,
    refusal,
    seal,
    text,
)
from ._parse import _PIVOT_RE, _raw, flagged_steps, reasoning_before

log = logging.getLogger(__name__)

PivotAction = Literal["halt", "rollback", "continue"]


def pivot_token_ids(model: ChatModel) -> dict[int, str] | None:
    """Pivot id -> pivot string, when every pivot is one token of the model's tokenizer.

    Ids are looked up by string (never by position in the vocabulary). None means the backend
    has no tokenizer or the pivots are not single tokens: the guard then matches text instead.
    """
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        return None
    ids: dict[int, str] = {}
    for p in PIVOTS:
        tid = tok.convert_tokens_to_ids(p)
        if not isinstance(tid, int) or tid < 0 or tid == tok.unk_token_id:
            return None
        ids[tid] = p
    return ids


class PivotWatcher:
    """The token hook: records pivots per row and halts rows on the pivots in ``act_on``.

    Kept cheap, because it runs for every token of every row: an id lookup in id mode, or a
    short rolling text tail in text mode (pivots split over several pieces still match).
    """

    def __init__(self, ids: dict[int, str] | None, act_on: frozenset[str]):
        self.ids, self.act_on = ids, act_on
        self.seen: dict[int, list[str]] = {}
        self.fired: dict[int, str] = {}
        self._tail: dict[int, str] = {}

    def __call__(self, event: TokenEvent) -> bool:
        if self.ids is not None and event.token_id is not None:
            pivot = self.ids.get(event.token_id)
        else:
            tail = (self._tail.get(event.row, "") + event.piece)[-24:]
            pivot = next((p for p in PIVOTS if tail.endswith(p)), None)
            self._tail[event.row] = "" if pivot else tail
        if pivot is None:
            return False
        self.seen.setdefault(event.row, []).append(pivot)
        if pivot in self.act_on:
            self.fired[event.row] = pivot
            return True
        if pivot != PIVOT_SAFE:
            log.info("r2d-pivot: row %d emitted %s; continuing", event.row, pivot)
        return False


@GUARDS.register()
@dataclass
class PivotGuard(GuardBase):
    """Decode-time R2D guard: halt or roll back on [UNSAFE] (and optionally [RETHINK])."""

    name: ClassVar[str] = "r2d-pivot"
    kind: ClassVar[GuardKind] = "decode"
    paper: ClassVar[str] = "https://arxiv.org/abs/2502.12970"

    on_unsafe: PivotAction = "halt"
    """What an [UNSAFE] pivot does: halt with a refusal, roll back to the last safe step, or continue (log)."""
    on_rethink: PivotAction = "continue"
    """What a [RETHINK] pivot does (the papers' models over-use it, hence continue by default)."""
    fail_open: bool = False
    """Show an answer that does not end with a [SAFE] pivot or leaves <think> open (by default it is refused)."""
    rollback_tokens: int = 96
    """Token budget of the refusal continuation after a rollback."""
    policy: str | None = None
    """Policy file whose rule ids name the concern in refusals (None: the SCoT taxonomy)."""
    halt_message: str | None = None
    """Refusal for ``halt`` with ``{categories}`` (the policy ids the flagged step names); default from
    prompts.yaml. When the step names none, the fixed generic refusal is used."""
    rollback_opener: str | None = None
    """Text the model continues from after a rollback (may contain ``{categories}``); default from prompts.yaml."""
    fail_closed_message: str | None = None
    """Refusal text when the answer fails the fail-closed check; default from prompts.yaml."""

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self.name, rollback_tokens=self.rollback_tokens)
        for option in ("halt_message", "rollback_opener"):
            template = getattr(self, option)
            if template is None:
                continue
            try:
                template.format(categories="illicit/violent")
            except (KeyError, IndexError, ValueError) as e:
                raise SpecError(f"guard 'r2d-pivot': {option} may only use the placeholder {{categories}} (the "
                                f"flagged step itself is never shown); got {template!r} ({e!r})") from None

    def _act_on(self) -> frozenset[str]:
        acts = {PIVOT_UNSAFE: self.on_unsafe, PIVOT_RETHINK: self.on_rethink}
        return frozenset(p for p, a in acts.items() if a != "continue")

    def _flag_on(self) -> frozenset[str]:
        """Pivots whose step is flagged: those the guard acts on, and [UNSAFE] always."""
        return self._act_on() | {PIVOT_UNSAFE}

    def _action(self, pivot: str) -> PivotAction:
        return self.on_unsafe if pivot == PIVOT_UNSAFE else self.on_rethink

    def generate(self, model: ChatModel, conversations: Sequence[Conversation], config: GenerationConfig,
                 *, progress: ProgressFn | None = None) -> list[GuardedOutput]:
        convs = list(conversations)
        ids = pivot_token_ids(model)
        watcher = PivotWatcher(ids, self._act_on())
        comps = model.generate(convs, config, hook=watcher, progress=progress)
        outs: list[GuardedOutput | None] = [None] * len(convs)
        to_roll: list[tuple[int, str, str]] = []  # (row, raw, pivot)
        for i, c in enumerate(comps):
            raw = _raw(c)
            pivot = watcher.fired.get(i)
            info: dict[str, Any] = {"pivots": watcher.seen.get(i, []), "pivot_ids": ids is not None}
            if pivot is None:
                outs[i] = self._finish(c, raw, info)
            elif self._action(pivot) == "halt":
                outs[i] = self._halt(c, raw, pivot, info)
            else:
                to_roll.append((i, raw, pivot))
        if to_roll:
            for (i, _, pivot), out in zip(to_roll, self._rollback(model, convs, config, to_roll, ids)):
                out.info.update(pivots=watcher.seen.get(i, []), trigger=pivot, rolled_back_from=_raw(comps[i]))
                outs[i] = out
        return [o for o in outs if o is not None]

    # -------------------------------------------------------------- actions

    def _categories(self, flagged: list[str]) -> list[str]:
        return categories_in(flagged, policy_ids(self.policy))

    def _finish(self, c: Completion, raw: str, info: dict[str, Any]) -> GuardedOutput:
        """No pivot fired. A step may still be flagged (an [UNSAFE] the guard was told to ``continue`` on):
        it stays in the answer, as asked, and out of the safe reasoning."""
        reasoning, answer = strip_r2d(raw)
        flagged = flagged_steps(raw, self._flag_on())
        safe = reasoning_before(raw, self._flag_on())
        if not self.fail_open:
            problem = fail_closed_problem(raw)
            if problem:
                msg = self.fail_closed_message or text("pivot", "fail_closed")
                return seal(refusal(msg, raw=raw, reasoning=reasoning, action="refused", reason=problem,
                                    flagged=flagged, safe_reasoning=safe, **info), msg)
        return passthrough(c, text=answer, reasoning=reasoning, flagged=flagged, safe_reasoning=safe, **info)

    def _halt(self, c: Completion, raw: str, pivot: str, info: dict[str, Any]) -> GuardedOutput:
        reasoning, _ = strip_r2d(raw)
        flagged = flagged_steps(raw, self._flag_on())
        cats = self._categories(flagged)
        msg = concern_message(cats, self.halt_message)
        out = GuardedOutput(
            text=msg, raw=raw, reasoning=reasoning or None, action="halted", finish_reason="hook",
            info={**info, "trigger": pivot, "categories": cats,
                  "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens},
            flagged=flagged, safe_reasoning=reasoning_before(raw, self._flag_on()))
        return seal(out, msg)

    def _opener(self, cats: list[str]) -> str:
        if self.rollback_opener is not None:
            return self.rollback_opener.format(categories=", ".join(cats) or "the safety policy")
        if cats:
            return text("pivot", "rollback_opener_named").format(categories=", ".join(cats))
        return text("pivot", "rollback_opener")

    def _rollback(self, model: ChatModel, convs: list[Conversation], config: GenerationConfig,
                  rows: list[tuple[int, str, str]], ids: dict[int, str] | None) -> list[GuardedOutput]:
        flagged = [flagged_steps(raw, self._flag_on()) for _, raw, _ in rows]
        cats = [self._categories(f) for f in flagged]
        kept = [kept_before(raw, pivot) for _, raw, pivot in rows]
        prefixes = [k + joint(k) + self._opener(cs) for k, cs in zip(kept, cats)]
        cfg = replace(config, max_new_tokens=min(config.max_new_tokens, self.rollback_tokens))
        # The continuation is watched too: a second [UNSAFE] ends it with the plain concern refusal.
        watcher = PivotWatcher(ids, frozenset({PIVOT_UNSAFE}))
        comps = model.generate([convs[i] for i, _, _ in rows], cfg, prefixes=prefixes, hook=watcher)
        outs = []
        for j, (c, prefix, (_, raw, _)) in enumerate(zip(comps, prefixes, rows)):
            full = prefix + _raw(c)
            _, answer = strip_r2d(full)
            stopped = list(flagged[j])
            if watcher.fired.get(j):
                answer = concern_message(cats[j])
                stopped += flagged_steps(full[len(prefix):], {PIVOT_UNSAFE})
            out = GuardedOutput(
                text=answer, raw=full, reasoning=strip_r2d(raw)[0] or None, action="rolled_back",
                finish_reason=c.finish_reason,
                info={"categories": cats[j], "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens},
                flagged=stopped, safe_reasoning=reasoning_before(raw, self._flag_on()))
            outs.append(seal(out, concern_message(cats[j])))
        return outs

def kept_before(raw: str, pivot: str) -> str:
    """The text up to the end of the last [SAFE] step before the pivot that fired ("" if none)."""
    stop = raw.rfind(pivot)
    head = raw[:stop] if stop >= 0 else raw
    k = head.rfind(PIVOT_SAFE)
    return head[:k + len(PIVOT_SAFE)] if k >= 0 else ""


def joint(kept: str) -> str:
    """What goes between kept text and the refusal opener: close an open think block."""
    if kept.count(THINK_OPEN) > kept.count(THINK_CLOSE):
        return f"\n{THINK_CLOSE} {PIVOT_SAFE}\n"
    return "\n" if kept else ""


def fail_closed_problem(raw: str) -> str | None:
    """Why an answer fails a fail-closed check (None when it passes)."""
    if raw.count(THINK_OPEN) > raw.count(THINK_CLOSE):
        return "unclosed <think>"
    pivots = _PIVOT_RE.findall(raw)
    if not pivots:
        return "no pivot"
    if not raw.rstrip().endswith(PIVOT_SAFE):
        return f"ends without a final {PIVOT_SAFE} (last pivot {pivots[-1]})"
    return None
