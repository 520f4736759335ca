"""What a teacher is given and what it returns: validated, structured reasoning (not free text)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .._registry import Registry

PivotName = Literal["SAFE", "UNSAFE", "RETHINK"]


@dataclass(frozen=True)
class TeachRequest:
    """One prompt to reason about."""

    item_id: str
    """Stable id of the training item; seeds per-item randomness so builds are reproducible."""
    prompt: str
    """What the user sends (possibly an evolved, attack-style rewrite)."""
    label: Literal["harmful", "benign"]
    original: str | None = None
    """The request before evolution (the intent to see through), if it was rewritten."""
    categories: tuple[str, ...] = ()
    """Policy ids known from dataset metadata; empty when the teacher must decide."""
    seed: int = 0
    style: str = "original"
    """Evolution style of ``prompt`` ('original' when not rewritten)."""


class RuleVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    category: str = Field(description="Policy rule id.")
    violated: bool
    reason: str = Field(default="", description="Why it is violated (required when violated).")


class SCoTReasoning(BaseModel):
    """The parts of a SCoT assistant turn before the answer."""

    model_config = ConfigDict(extra="forbid")
    intent: str = Field(min_length=1, description="The request restated in under ten words.")
    verdicts: list[RuleVerdict]
    refusal: str | None = Field(default=None, description="The refusal text (harmful requests only).")

    @field_validator("intent")
    @classmethod
    def _short(cls, v: str) -> str:
        v = " ".join(v.split())
        if len(v.split()) >= 10:  # the paper's format: under ten words
            raise ValueError(f"intent must be under ten words, got {len(v.split())}")
        return v

    @property
    def violated(self) -> list[str]:
        return [v.category for v in self.verdicts if v.violated]


class R2DStepOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1)
    pivot: PivotName


class R2DTrace(BaseModel):
    """Step-wise reasoning with a pivot per step, plus the answer (refusal) for harmful requests."""

    model_config = ConfigDict(extra="forbid")
    steps: list[R2DStepOut] = Field(min_length=1)
    answer: str | None = Field(default=None, description="Final answer; None for benign (the target model answers).")
    categories: list[str] = Field(default_factory=list)

    @field_validator("steps")
    @classmethod
    def _clean(cls, v: list[R2DStepOut]) -> list[R2DStepOut]:
        from ..data._formats import R2D_SPECIAL_TOKENS

        for s in v:  # the teacher must not write the pivot tokens itself; we place them
            for t in R2D_SPECIAL_TOKENS:
                if t in s.text:
                    raise ValueError(f"step text must not contain {t}")
        return v


@runtime_checkable
class Teacher(Protocol):
    """Writes safety reasoning for batches of requests."""

    spec: str

    def scot(self, requests: Sequence[TeachRequest]) -> list[SCoTReasoning]: ...

    def r2d(self, requests: Sequence[TeachRequest]) -> list[R2DTrace]: ...


@dataclass(frozen=True)
class TeachFailure:
    """A request a teacher could not write reasoning for, after the retries and repairs: the
    endpoint kept failing, or the model never answered validly."""

    item_id: str
    error: str
    """What went wrong, for the build journal and the error message."""
    cause: BaseException | None = field(default=None, repr=False, compare=False)


@dataclass
class TeacherStats:
    """Counters a build reports (repairs, failed requests)."""

    calls: int = 0
    repairs: int = 0
    failures: int = 0
    errors: list[str] = field(default_factory=list)


TEACHERS: Registry = Registry("teacher")
