"""The judge interface: read a (prompt, response) pair and say what the answer is (complied, partly
complied, refused, or no answer at all) and how harmful the compliance was."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args

from .._registry import Registry

Outcome = Literal["complied", "partial", "refused", "no_answer"]
"""What the answer is. ``partial``: some of the request answered, some declined; ``no_answer``: the
answer is empty or only repeats the prompt, so it neither complies nor refuses."""
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
REFUSED_OUTCOMES: frozenset[str] = frozenset({"refused", "partial"})
"""Outcomes that count as a refusal (the XSTest convention: anything short of full compliance)."""

Measure = Literal["refusal", "harm"]
"""What a judge's verdicts measure: ``refusal`` (a refusal detector: "not refused" is all it knows)
or ``harm`` (whether the answer actually carries out the harmful request)."""


@dataclass(frozen=True)
class JudgeInput:
    prompt: str
    """The original request (the behaviour), not the attack-wrapped one."""
    response: str
    """The answer the user sees: the guard's visible output, decoded if the attack encoded it, after
    ``prefix`` when the attack prefilled the answer."""
    sent_prompt: str | None = None
    """The prompt actually sent, when an attack rewrote it."""
    prefix: str = ""
    """The start of ``response`` that the attack wrote into the answer (prefilling), not the model."""


@dataclass(frozen=True)
class Verdict:
    refused: bool
    """True for the outcomes ``refused`` and ``partial``, False for ``complied`` and ``no_answer``."""
    score: float
    """0-1: higher is more harmful compliance (a successful jailbreak scores near 1)."""
    explanation: str
    judge: str
    """The spec of the judge that gave this verdict."""
    details: dict[str, Any] | None = None
    outcome: Outcome | None = None
    """Left out, it follows ``refused`` ("refused" or "complied"), for judges that know no other
    outcome; always set once the verdict is built."""

    def __post_init__(self) -> None:
        if self.outcome is None:
            object.__setattr__(self, "outcome", "refused" if self.refused else "complied")
        elif self.outcome not in OUTCOMES:
            raise ValueError(f"verdict outcome {self.outcome!r} is not one of {', '.join(OUTCOMES)}")
        elif bool(self.refused) != (self.outcome in REFUSED_OUTCOMES):
            raise ValueError(f"verdict outcome {self.outcome!r} contradicts refused={self.refused!r}: refused is "
                             f"True exactly for {' and '.join(sorted(REFUSED_OUTCOMES))}")

    def to_json(self) -> dict[str, Any]:
        """The stored form (eval results, ``safethink judge`` output)."""
        return {"refused": bool(self.refused), "outcome": self.outcome, "score": float(self.score),
                "explanation": self.explanation, "judge": self.judge, "details": self.details}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Verdict:
        """Read a stored verdict; one stored before outcomes existed gets the outcome its ``refused`` implies."""
        return cls(refused=bool(data["refused"]), score=float(data["score"]), explanation=data.get("explanation", ""),
                   judge=data.get("judge", ""), details=data.get("details"), outcome=data.get("outcome"))


def stored_outcome(data: Mapping[str, Any]) -> Outcome:
    """The outcome of a stored verdict (derived from ``refused`` when it predates outcomes)."""
    out = data.get("outcome")
    if out is None:
        return "refused" if data["refused"] else "complied"
    if out not in OUTCOMES:
        raise ValueError(f"stored verdict outcome {out!r} is not one of {', '.join(OUTCOMES)}")
    return out


class Judge(Protocol):
    spec: str
    measures: Measure
    """What the verdicts measure; a judge that does not say is taken as a refusal detector."""

    def judge(self, items: Sequence[JudgeInput]) -> list[Verdict]:
        """One verdict per input, in order."""
        ...


JUDGES: Registry[Judge] = Registry("judge")


def judge_measures(judge: Any) -> Measure:
    """What a judge measures, from the judge object or its spec string (looked up in the registry).
    A judge that does not declare ``measures`` counts as a refusal detector: its rate is only called an
    attack success rate when the judge says it rates harm."""
    if isinstance(judge, str):
        name = judge.split("?", 1)[0].strip()
        judge = JUDGES.get(name) if name in JUDGES else None
    declared = getattr(judge, "measures", None)
    return "harm" if declared == "harm" else "refusal"
