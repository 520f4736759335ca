"""Guards that only read the model's output: ``none``, ``scot`` (split the SCoT reasoning from the
response) and ``r2d`` (move the R2D think block and pivots out of the visible text)."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal, get_args

from ..data._formats import (
    DEFAULT_SCOT_FORMAT,
    PIVOT_UNSAFE,
    PIVOTS,
    R2D_SPECIAL_TOKENS,
    THINK_CLOSE,
    SCoTFormat,
    parse_r2d,
    parse_scot,
    strip_r2d,
)
from ..errors import SpecError
from ..models import ChatModel, Completion, Conversation, GenerationConfig, ProgressFn
from ._base import GUARDS, GuardedOutput
from ._core import (
    GuardBase,
    GuardKind,
    categories_in,
    concern_message,
    looks_like_refusal,
    passthrough,
    policy_ids,
    refusal,
    seal,
)

_PIVOT_RE = re.compile("|".join(re.escape(p) for p in PIVOTS))


@GUARDS.register()
@dataclass
class NoGuard(GuardBase):
    """No defence: the model's answer as it is."""

    name: ClassVar[str] = "none"
    kind: ClassVar[GuardKind] = "none"

    def generate(self, model: ChatModel, conversations: Sequence[Conversation], config: GenerationConfig,
                 *, progress: ProgressFn | None = None) -> list[GuardedOutput]:
        return [passthrough(c) for c in model.generate(list(conversations), config, progress=progress)]


ScotMalformed = Literal["show", "refuse", "hide"]

_YES_LINE = re.compile(r"^[ \t]*[*-][ \t]*[^:\n]+?[ \t]*:[ \t]*Yes\b[.:]?[ \t]*(?:Reason:)?[ \t]*(?P<reason>.*)$",
                       re.IGNORECASE | re.MULTILINE)


def scot_reasons(reasoning: str) -> tuple[list[str], str]:
    """The reasons given for violated rules (the flagged steps of a SCoT analysis), and the analysis
    before the first of them."""
    matches = list(_YES_LINE.finditer(reasoning))
    if not matches:
        return [], reasoning
    return [m.group("reason").strip() for m in matches if m.group("reason").strip()], reasoning[:matches[0].start()].rstrip()


@dataclass
class SCoTReader:
    """How a SCoT-format answer becomes visible text (shared by ``scot`` and ``scot-prompt``).

    A refusal names violated rules by their policy ids only (``known``); a rule name the model made up
    is never echoed. What the guard replaces (a complying answer after a rejection) and the reasons
    given for violated rules are ``flagged`` and never shown.
    """

    fmt: SCoTFormat = DEFAULT_SCOT_FORMAT
    malformed: ScotMalformed = "refuse"
    name_rules: bool = True
    known: tuple[str, ...] = ()
    """Policy ids a refusal may name (others read as "the safety policy")."""

    def read(self, c: Completion) -> GuardedOutput:
        p = parse_scot(c.text, self.fmt)
        named = {cat.lower() for cat, yes in p.verdicts.items() if yes}
        violated = [rid for rid in self.known if rid.lower() in named]
        reasons, safe = scot_reasons(p.reasoning)
        # Unreadable: the headers are missing, or the analysis reaches no decision (no conclusion, no rule line).
        if p.rejected is None and (not p.well_formed or not p.verdicts):
            if self.malformed == "refuse":
                return seal(refusal(self.fmt.refusal.format(categories="the safety policy (unreadable safety check)"),
                                    raw=_raw(c), reasoning=p.reasoning, action="refused", malformed=True,
                                    flagged=reasons, safe_reasoning=""))
            if self.malformed == "hide":
                return seal(passthrough(c, text="", reasoning=p.reasoning or c.text, action="hidden", malformed=True,
                                        flagged=reasons, safe_reasoning=""))
            return passthrough(c, text=p.response or c.text, reasoning=p.reasoning, malformed=True, flagged=reasons,
                               safe_reasoning="")
        if p.rejected or (p.rejected is None and named):
            rules = ", ".join(violated) or "the safety policy"
            message = self.fmt.refusal.format(categories=rules)
            answer, stopped = p.response, []
            # A refusal must say which rules it applies; an answer that names none of them, or that
            # complies despite the conclusion, is replaced with the format's refusal.
            if self.name_rules and (not any(r in answer for r in violated or ["the safety policy"])
                                    or not looks_like_refusal(answer)):
                answer = message
                if not looks_like_refusal(p.response):
                    stopped = [p.response]
            return seal(passthrough(c, text=answer, reasoning=p.reasoning, action="refused", violated=violated,
                                    malformed=not p.well_formed, flagged=[*reasons, *stopped], safe_reasoning=safe),
                        message)
        return passthrough(c, text=p.response, reasoning=p.reasoning, violated=[], malformed=not p.well_formed,
                           flagged=reasons, safe_reasoning=safe)


def _raw(c: Completion) -> str:
    return c.raw_text if c.raw_text is not None else c.text


@GUARDS.register()
@dataclass
class SCoTGuard(GuardBase):
    """For SCoT-trained models: the user sees the response; the safety analysis is ``reasoning``.

    When the analysis concludes with a rejection, the visible answer names the violated rules.
    ``malformed`` says what to do with an answer without the SCoT headers: ``refuse`` (the default:
    fail closed), ``hide`` it (empty visible text) or ``show`` it as is (``fail_open=True``).
    """

    name: ClassVar[str] = "scot"
    kind: ClassVar[GuardKind] = "parse"
    paper: ClassVar[str] = "https://arxiv.org/abs/2501.19180"

    malformed: ScotMalformed | None = None
    """What the user sees when the answer lacks the SCoT headers: refuse (default), hide, or show it."""
    fail_open: bool = False
    """Show an unreadable answer as it is (the same as ``malformed="show"``; ``malformed`` wins if given)."""
    name_rules: bool = True
    """Replace a refusal that names none of the violated rules with the format's refusal."""
    policy: str | None = None
    """Policy file whose rule ids a refusal may name (None: the SCoT taxonomy)."""
    fmt: SCoTFormat = field(default_factory=lambda: DEFAULT_SCOT_FORMAT)
    """The SCoT strings (headers, conclusions, refusal template)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        choices = get_args(ScotMalformed)
        if self.malformed is not None and self.malformed not in choices:
            raise SpecError(f"guard 'scot': malformed={self.malformed!r}; expected one of {', '.join(map(repr, choices))}")

    @property
    def on_malformed(self) -> ScotMalformed:
        return self.malformed or ("show" if self.fail_open else "refuse")

    def generate(self, model: ChatModel, conversations: Sequence[Conversation], config: GenerationConfig,
                 *, progress: ProgressFn | None = None) -> list[GuardedOutput]:
        reader = SCoTReader(self.fmt, self.on_malformed, self.name_rules, policy_ids(self.policy))
        return [reader.read(c) for c in model.generate(list(conversations), config, progress=progress)]


# ------------------------------------------------------------------ R2D

_R2D_TOKEN_RE = re.compile("|".join(re.escape(t) for t in R2D_SPECIAL_TOKENS))


def flagged_steps(raw: str, pivots: Collection[str]) -> list[str]:
    """The text of every step that ended with one of ``pivots`` (in order, without empty steps)."""
    return [s.text for s in parse_r2d(raw) if s.pivot in pivots and s.text and s.text != THINK_CLOSE]


def reasoning_before(raw: str, pivots: Collection[str]) -> str:
    """The think-block reasoning a user may see: the steps before the first step that ended with one of
    ``pivots``, and never text after the last pivot or think tag (a step not yet checked)."""
    cut = 0
    for m in _R2D_TOKEN_RE.finditer(raw):
        if m.group(0) in pivots:
            break
        cut = m.end()
    return strip_r2d(raw[:cut])[0]


def read_r2d(c: Completion, *, refuse_on_unsafe: bool = False, policy: str | None = None) -> GuardedOutput:
    """Split an R2D answer: think block + pivots to ``reasoning``, the rest visible. Steps that end in
    ``[UNSAFE]`` are flagged (never in the safe reasoning); with ``refuse_on_unsafe`` any of them
    turns the answer into a refusal that names the policy categories they mention."""
    raw = _raw(c)
    reasoning, answer = strip_r2d(raw)
    pivots = _PIVOT_RE.findall(raw)
    flagged = flagged_steps(raw, {PIVOT_UNSAFE})
    safe = reasoning_before(raw, {PIVOT_UNSAFE})
    if refuse_on_unsafe and PIVOT_UNSAFE in pivots:
        cats = categories_in(flagged, policy_ids(policy))
        return seal(refusal(concern_message(cats), raw=raw, reasoning=reasoning, action="refused", pivots=pivots,
                            categories=cats, flagged=flagged, safe_reasoning=safe))
    return passthrough(c, text=answer, reasoning=reasoning, pivots=pivots, flagged=flagged, safe_reasoning=safe)


@GUARDS.register()
@dataclass
class R2DGuard(GuardBase):
    """For R2D-trained models, without acting: strip pivots and move ``<think>`` to reasoning."""

    name: ClassVar[str] = "r2d"
    kind: ClassVar[GuardKind] = "parse"
    paper: ClassVar[str] = "https://arxiv.org/abs/2502.12970"

    def generate(self, model: ChatModel, conversations: Sequence[Conversation], config: GenerationConfig,
                 *, progress: ProgressFn | None = None) -> list[GuardedOutput]:
        return [read_r2d(c) for c in model.generate(list(conversations), config, progress=progress)]
