"""The guard interface: a defence wrapped around generation.

A guard may rewrite the conversation (prompt defences), filter it before the model sees it,
watch tokens while decoding (R2D pivot guard) or post-process the output (SCoT response split).
Evaluation and serving call guards only through :meth:`Guard.generate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .._registry import Registry
from ..models import ChatModel, Conversation, GenerationConfig, ProgressFn

ReasoningMode = Literal["none", "safe", "full"]
"""How much of a guarded output's reasoning may be shown: none, the steps before the first flagged
step, or all of it (for debugging: it contains what the guard stopped)."""


@dataclass
class GuardedOutput:
    text: str
    """What the user sees. A guard that acts never lets it show a ``flagged`` text (``seal``); one that
    does not (``r2d``, ``on_unsafe="continue"``) shows the answer as it is, and the server seals it."""
    raw: str
    """Everything the model produced (special tokens kept), for logs."""
    reasoning: str | None = None
    """Safety reasoning split off the visible text (SCoT analysis, R2D think block), flagged steps included."""
    action: str | None = None
    """What the guard did: None, 'blocked', 'halted', 'rolled_back', 'refused', ..."""
    finish_reason: str = "stop"
    info: dict[str, Any] = field(default_factory=dict)
    flagged: list[str] = field(default_factory=list)
    """Texts the guard stopped or the model itself marked unsafe (an R2D step ending in a pivot the
    guard acts on or in ``[UNSAFE]``, a SCoT reason for a violated rule, an answer the guard
    replaced). Never shown to users; kept so evaluation can check for leaks with ``leaked``."""
    safe_reasoning: str | None = None
    """The part of ``reasoning`` before the first flagged step (and before any step not yet checked).
    None when the guard did not compute one: then all of ``reasoning`` if nothing is flagged, else none."""

    def shown_reasoning(self, mode: ReasoningMode) -> str | None:
        """The reasoning a user may see under ``mode`` (``full`` is for debugging: it shows flagged steps)."""
        if mode == "full":
            return self.reasoning or None
        if mode == "safe":
            shown = self.safe_reasoning if self.safe_reasoning is not None or self.flagged else self.reasoning
            return shown or None
        return None


class Guard(Protocol):
    name: str

    def generate(
        self, model: ChatModel, conversations: Sequence[Conversation], config: GenerationConfig,
        *, progress: ProgressFn | None = None,
    ) -> list[GuardedOutput]: ...


GUARDS: Registry[Guard] = Registry("guard")
