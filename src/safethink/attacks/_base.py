"""The attack interface. Every attack turns prompt records into the conversations sent to the
target model, and records its name, parameters and seed so the run can be rebuilt."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from .._registry import Registry
from ..data._schema import PromptRecord
from ..models import ChatModel, Conversation

AttackFamily = Literal["none", "template", "encoding", "rewrite", "multi-turn", "optimisation", "model-driven"]


@dataclass
class AttackedPrompt:
    """What an attack made of one record."""

    record_id: str
    messages: Conversation
    """The conversation to send to the target."""
    attack: str
    params: dict[str, Any]
    seed: int
    prefix: str = ""
    """Assistant-turn prefill, for attacks that start the answer (prefilling)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Attack-specific details (e.g. PAIR iterations, GCG loss)."""


class Attack(Protocol):
    name: ClassVar[str]
    family: ClassVar[AttackFamily]
    paper: ClassVar[str]
    """Link to the paper or source that defines the attack."""
    needs_target: ClassVar[bool]
    """True for attacks that query or differentiate the target model (PAIR, TAP, GCG, AutoDAN)."""

    def prepare(self, records: Sequence[PromptRecord], *, seed: int, target: ChatModel | None = None) -> list[AttackedPrompt]:
        """Build one attacked prompt per record, deterministically for a given seed."""
        ...

    def decode_response(self, text: str) -> str:
        """Undo an output encoding the attack asked for (base64, rot13...); identity otherwise."""
        ...


ATTACKS: Registry[Attack] = Registry("attack")
