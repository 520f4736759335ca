"""Guards that only read the model's output: ``none``, ``scot`` (split the SCoT reasoning from the
response) and ``r2d`` (move the R2D think block and pivots out of the visible text)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from ..data._formats import DEFAULT_SCOT_FORMAT, PIVOTS, SCoTFormat, parse_scot, strip_r2d
from ..models import ChatModel, Completion, Conversation, GenerationConfig, ProgressFn
from ._base import GUARDS, GuardedOutput
from ._core import GuardBase, GuardKind, passthrough, refusal

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


@dataclass
class SCoTReader:
    """How a SCoT-format answer becomes visible text (shared by ``scot`` and ``scot-prompt``)."""

    fmt: SCoTFormat = DEFAULT_SCOT_FORMAT
    malformed: ScotMalformed = "show"
    name_rules: bool = True

    def read(self, c: Completion) -> GuardedOutput:
        p = parse_scot(c.text, self.fmt)
        violated = [cat for cat, yes in p.verdicts.items() if yes]
        if not p.well_formed and p.rejected is None:
            if self.malformed == "refuse":
                return refusal(self.fmt.refusal.format(categories="the safety policy (unreadable safety check)"),
                               raw=_raw(c), reasoning=p.reasoning, action="refused", malformed=True)
            if self.malformed == "hide":
                return passthrough(c, text="", reasoning=p.reasoning or c.text, action="hidden", malformed=True)
            return passthrough(c, text=p.response or c.text, reasoning=p.reasoning, malformed=True)
        if p.rejected or (p.rejected is None and violated):
            rules = ", ".join(violated) or "the safety policy"
            answer = p.response
            # A refusal must say which rules it applies; an answer that names none of them (or
            # that complies despite the conclusion) is replaced with the format's refusal.
            if self.name_rules and not any(r in answer for r in violated or ["the safety policy"]):
                answer = self.fmt.refusal.format(categories=rules)
            return passthrough(c, text=answer, reasoning=p.reasoning, action="refused",
                               violated=violated, malformed=not p.well_formed)
        return passthrough(c, text=p.response, reasoning=p.reasoning, violated=[], malformed=not p.well_formed)


def _raw(c: Completion) -> str:
    return c.raw_text if c.raw_text is not None else c.text


@GUARDS.register()
@dataclass
class SCoTGuard(GuardBase):
    """For SCoT-trained models: the user sees the response; the safety analysis is ``reasoning``.

    When the analysis concludes with a rejection, the visible answer names the violated rules.
    ``malformed`` says what to do with an answer without the SCoT headers: ``show`` it as is,
    ``refuse``, or ``hide`` it (empty visible text).
    """

    name: ClassVar[str] = "scot"
    kind: ClassVar[GuardKind] = "parse"
    paper: ClassVar[str] = "https://arxiv.org/abs/2501.19180"

    malformed: ScotMalformed = "show"
    """What the user sees when the answer lacks the SCoT headers."""
    name_rules: bool = True
    """Replace a refusal that names none of the violated rules with the format's refusal."""
    fmt: SCoTFormat = field(default_factory=lambda: DEFAULT_SCOT_FORMAT)
    """The SCoT strings (headers, conclusions, refusal template)."""

    def generate(self, model: ChatModel, conversations: Sequence[Conversation], config: GenerationConfig,
                 *, progress: ProgressFn | None = None) -> list[GuardedOutput]:
        reader = SCoTReader(self.fmt, self.malformed, self.name_rules)
        return [reader.read(c) for c in model.generate(list(conversations), config, progress=progress)]


def read_r2d(c: Completion, *, refuse_on_unsafe: bool = False) -> GuardedOutput:
    """Split an R2D answer: think block + pivots to ``reasoning``, the rest visible."""
    raw = _raw(c)
    reasoning, answer = strip_r2d(raw)
    pivots = _PIVOT_RE.findall(raw)
    if refuse_on_unsafe and "[UNSAFE]" in pivots:
        from ._core import text

        return refusal(text("refusal", "default"), raw=raw, reasoning=reasoning, action="refused", pivots=pivots)
    return passthrough(c, text=answer, reasoning=reasoning, pivots=pivots)


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
