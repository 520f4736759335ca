"""The guard interface: a defence wrapped around generation.

A guard may rewrite the conversation (prompt defences), filter it before the model sees it,
watch tokens while decoding (R2D pivot guard) or post-process the output (SCoT response split).
Evaluation and serving call guards only through :meth:`Guard.generate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .._registry import Registry
from ..models import ChatModel, Conversation, GenerationConfig, ProgressFn


@dataclass
class GuardedOutput:
    text: str
    """What the user sees."""
    raw: str
    """Everything the model produced (special tokens kept), for logs."""
    reasoning: str | None = None
    """Safety reasoning split off the visible text (SCoT analysis, R2D think block)."""
    action: str | None = None
    """What the guard did: None, 'blocked', 'halted', 'rolled_back', 'refused', ..."""
    finish_reason: str = "stop"
    info: dict[str, Any] = field(default_factory=dict)


class Guard(Protocol):
    name: str

    def generate(
        self, model: ChatModel, conversations: Sequence[Conversation], config: GenerationConfig,
        *, progress: ProgressFn | None = None,
    ) -> list[GuardedOutput]: ...


GUARDS: Registry[Guard] = Registry("guard")
