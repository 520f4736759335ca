"""Machinery shared by the guards: prompt texts (package data), option checks, conversation edits,
turning completions into :class:`GuardedOutput`, refusals that name a concern by its policy category,
``seal`` (nothing flagged stays visible), and a light keyword refusal check."""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from typing import Any, ClassVar, Literal, get_args, get_origin

from ..errors import SpecError
from ..models import ChatModel, Completion, Conversation, GenerationConfig, ProgressFn
from ._base import GuardedOutput
from ._leak import leaked

GuardKind = Literal["none", "parse", "decode", "prompt", "filter"]

BLOCKING_ACTIONS = frozenset({"blocked", "halted", "rolled_back", "refused"})
"""Actions after which the visible text is the guard's refusal rather than the model's answer."""


@lru_cache(maxsize=1)
def prompt_texts() -> dict[str, Any]:
    """The guard texts from ``prompts.yaml`` (read once, on first use)."""
    import yaml

    raw = resources.files(__package__).joinpath("prompts.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(raw)


def text(section: str, key: str) -> Any:
    return prompt_texts()[section][key]


class GuardBase:
    """Base for the built-in guards (all dataclasses; the dataclass fields are the options).

    ``Registry.create`` turns unknown options into a :class:`SpecError`; ``__post_init__`` here
    checks every ``Literal`` option, so a typo in a choice fails when the guard is built.
    """

    name: ClassVar[str]
    kind: ClassVar[GuardKind]
    paper: ClassVar[str] = ""
    """Where the defence was published (empty for safethink's own)."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            hint = hints.get(f.name)
            if get_origin(hint) is Literal and getattr(self, f.name) not in get_args(hint):
                choices = ", ".join(map(repr, get_args(hint)))
                raise SpecError(f"guard {self.name!r}: {f.name}={getattr(self, f.name)!r}; expected one of {choices}")

    def options(self) -> dict[str, Any]:
        """The guard's options as plain values (for logs)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def generate(
        self, model: ChatModel, conversations: Sequence[Conversation], config: GenerationConfig,
        *, progress: ProgressFn | None = None,
    ) -> list[GuardedOutput]:
        raise NotImplementedError


def positive(guard: str, **values: float) -> None:
    for k, v in values.items():
        if v <= 0:
            raise SpecError(f"guard {guard!r}: {k} must be > 0, got {v}")


# ------------------------------------------------------------------ conversations

def last_user_index(conv: Conversation) -> int:
    for i in range(len(conv) - 1, -1, -1):
        if conv[i]["role"] == "user":
            return i
    raise SpecError("a guarded conversation needs at least one user message")


def last_user(conv: Conversation) -> str:
    return conv[last_user_index(conv)]["content"]


def with_last_user(conv: Conversation, content: str) -> Conversation:
    """A copy of the conversation whose last user message says ``content``."""
    i = last_user_index(conv)
    out = [dict(m) for m in conv]
    out[i]["content"] = content
    return out


def with_system(conv: Conversation, system: str) -> Conversation:
    """Put ``system`` first; an existing system message is kept after it (the caller's own rules)."""
    if conv and conv[0]["role"] == "system":
        return [{"role": "system", "content": f"{system}\n\n{conv[0]['content']}"}, *[dict(m) for m in conv[1:]]]
    return [{"role": "system", "content": system}, *[dict(m) for m in conv]]


# ------------------------------------------------------------------ outputs

def usage(c: Completion) -> dict[str, Any]:
    return {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens}


def passthrough(c: Completion, *, text: str | None = None, reasoning: str | None = None,
                action: str | None = None, flagged: Sequence[str] = (), safe_reasoning: str | None = None,
                **info: Any) -> GuardedOutput:
    """A guarded output that shows the model's own answer (or ``text``)."""
    return GuardedOutput(
        text=c.text if text is None else text, raw=c.raw_text if c.raw_text is not None else c.text,
        reasoning=reasoning or None, action=action, finish_reason=c.finish_reason, info={**usage(c), **info},
        flagged=[f for f in flagged if f], safe_reasoning=safe_reasoning,
    )


def refusal(message: str, *, raw: str = "", reasoning: str | None = None, action: str = "blocked",
            flagged: Sequence[str] = (), safe_reasoning: str | None = None, **info: Any) -> GuardedOutput:
    """A guarded output in which the guard answers instead of the model."""
    return GuardedOutput(text=message, raw=raw, reasoning=reasoning or None, action=action,
                         finish_reason="stop", info=info, flagged=[f for f in flagged if f],
                         safe_reasoning=safe_reasoning)


# ------------------------------------------------------------------ concerns

@lru_cache(maxsize=8)
def policy_ids(policy: str | None = None) -> tuple[str, ...]:
    """Every rule id of a policy file (None: the SCoT taxonomy), in policy order."""
    from ..data import load_policy

    return tuple(r.id for r in load_policy(policy).rules)


def categories_in(texts: Sequence[str], ids: Sequence[str]) -> list[str]:
    """The policy ids named in ``texts`` (case-insensitive, whole ids: ``hate`` is not read inside
    ``hate/threatening``), in the order of ``ids``."""
    found = []
    for rid in ids:
        pattern = re.compile(rf"(?<![\w/]){re.escape(rid)}(?![\w/])", re.IGNORECASE)
        if rid not in found and any(pattern.search(t) for t in texts):
            found.append(rid)
    return found


def concern_message(categories: Sequence[str], template: str | None = None) -> str:
    """A refusal that names the concern by its policy categories, never by generated text; the fixed
    generic sentence when no category is known. ``template`` (with ``{categories}``) replaces the
    named form."""
    if not categories:
        return text("concern", "generic")
    return (template or text("concern", "named")).format(categories=", ".join(categories))


def seal(out: GuardedOutput, message: str | None = None) -> GuardedOutput:
    """Make sure nothing flagged is visible: an output whose text shows a flagged text gets a refusal
    instead (``message``, else the generic concern), and a safe reasoning that shows one is dropped."""
    if not out.flagged:
        return out
    if leaked(out.text, out.flagged):
        out.text = message or text("concern", "generic")
        if leaked(out.text, out.flagged):  # a flagged step that is little more than a category id
            out.text = text("concern", "generic")
        out.action = out.action if out.action in BLOCKING_ACTIONS else "refused"
        out.info["sealed"] = True
    if out.safe_reasoning and leaked(out.safe_reasoning, out.flagged):
        out.safe_reasoning = None
    return out


def looks_like_refusal(answer: str, markers: Sequence[str] | None = None) -> bool:
    """The guard layer's own light refusal check (case-insensitive markers near the start).

    Judges own the accurate refusal classifiers; guards stay independent of them, so SmoothLLM
    falls back to this when no judge is given.
    """
    head = answer[:300].lower().replace("\u2019", "'")
    if not head.strip():
        return True  # an empty answer helps nobody; count it as not complying
    return any(m in head for m in (markers or text("refusal", "markers")))


def run_stage(model: ChatModel, conversations: Sequence[Conversation], config: GenerationConfig,
              **kwargs: Any) -> list[Completion]:
    """``model.generate`` that tolerates an empty batch."""
    if not conversations:
        return []
    return model.generate(list(conversations), config, **kwargs)
