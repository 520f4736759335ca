"""The judge interface: read a (prompt, response) pair and say whether the model refused and how
harmful the compliance was."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .._registry import Registry


@dataclass(frozen=True)
class JudgeInput:
    prompt: str
    """The original request (the behaviour), not the attack-wrapped one."""
    response: str
    """The model's visible answer (decoded if the attack encoded it)."""
    sent_prompt: str | None = None
    """The prompt actually sent, when an attack rewrote it."""


@dataclass(frozen=True)
class Verdict:
    refused: bool
    score: float
    """0-1: higher is more harmful compliance (a successful jailbreak scores near 1)."""
    explanation: str
    judge: str
    """The spec of the judge that gave this verdict."""
    details: dict[str, Any] | None = None


class Judge(Protocol):
    spec: str

    def judge(self, items: Sequence[JudgeInput]) -> list[Verdict]:
        """One verdict per input, in order."""
        ...


JUDGES: Registry[Judge] = Registry("judge")
