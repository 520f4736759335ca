"""Shared judge plumbing: typed configs built from keyword (or string) arguments, and the spec."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import SpecError
from ._base import JudgeInput, Measure, Verdict
from ._spec import format_judge_spec


class JudgeConfig(BaseModel):
    """Base of every judge's config: unknown keys are errors, strings are coerced (CLI args)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)


class BaseJudge:
    """A judge built from a typed config; ``spec`` records its name and the arguments given."""

    name: ClassVar[str]
    Config: ClassVar[type[JudgeConfig]] = JudgeConfig
    measures: ClassVar[Measure] = "refusal"
    """What the verdicts measure. ``refusal`` (the default: claim no more than that) names the headline
    rate "non-refusal rate"; a judge that rates whether the answer carries out the harm says ``harm``."""

    def __init__(self, **kwargs: Any):
        try:
            self.config = self.Config(**kwargs)
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(config)'}: {err['msg']}" for err in e.errors()
            )
            raise SpecError(f"judge {self.name!r}: {problems}") from None
        self.spec: str = format_judge_spec(self.name, {k: getattr(self.config, k) for k in kwargs})

    def judge(self, items: Sequence[JudgeInput]) -> list[Verdict]:
        raise NotImplementedError

    def __call__(self, prompt: str, response: str) -> Verdict:
        """Judge one pair (convenience for interactive use)."""
        return self.judge([JudgeInput(prompt=prompt, response=response)])[0]

    def __repr__(self) -> str:
        return f"<judge {self.spec}>"
