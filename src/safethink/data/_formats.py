"""The exact text formats of SCoT and R2D assistant turns, as data (configurable), and parsers.

SCoT (Yang et al. 2025, first version)::

    #### Verify Request
    <one sentence restating the request in under ten words>
    * harassment/threatening: No.
    * illicit/violent: Yes. Reason: <why>
    ...
    Therefore, the request violates illicit/violent. I need to reject the request.
    #### Response
    <the answer, or a refusal that names the violated rules>

R2D (Zhu et al. 2025)::

    <think>
    step one [SAFE]
    step two [RETHINK]
    ...
    </think> [SAFE]
    answer [SAFE]
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# The R2D tokens live below the models layer (the mock model streams them); re-exported here with the formats.
from .._r2d_tokens import (  # noqa: F401
    PIVOT_RETHINK,
    PIVOT_SAFE,
    PIVOT_UNSAFE,
    PIVOTS,
    R2D_SPECIAL_TOKENS,
    THINK_CLOSE,
    THINK_OPEN,
)


@dataclass(frozen=True)
class SCoTFormat:
    """The strings of a SCoT turn. Change them to match another paper version or language."""

    verify_header: str = "#### Verify Request"
    response_header: str = "#### Response"
    yes_line: str = "* {category}: Yes. Reason: {reason}"
    no_line: str = "* {category}: No."
    reject_conclusion: str = "Therefore, the request violates {categories}. I need to reject the request."
    safe_conclusion: str = "Therefore, the request is safe and I can generate the response."
    refusal: str = "I'm sorry, but I can't help with that. The request violates {categories}."


DEFAULT_SCOT_FORMAT = SCoTFormat()


@dataclass
class SCoTParse:
    """A model output split into its reasoning and its final response."""

    reasoning: str
    response: str
    well_formed: bool
    """True when both headers were found in order."""
    verdicts: dict[str, bool] = field(default_factory=dict)
    """category -> violated, read from the per-category lines."""
    rejected: bool | None = None
    """What the conclusion said (None if no conclusion line was found)."""


_LINE = re.compile(r"^\s*[*-]\s*(?P<cat>[^:]+?)\s*:\s*(?P<yn>Yes|No)\b", re.IGNORECASE | re.MULTILINE)


def parse_scot(text: str, fmt: SCoTFormat = DEFAULT_SCOT_FORMAT) -> SCoTParse:
    """Split on the response header. Without one, everything is the response (not well formed)."""
    head = text.find(fmt.verify_header)
    cut = text.find(fmt.response_header)
    if cut < 0:
        return SCoTParse(reasoning=text.strip() if head >= 0 else "", response="" if head >= 0 else text.strip(),
                         well_formed=False, verdicts=_verdicts(text), rejected=_conclusion(text, fmt))
    reasoning = text[:cut]
    response = text[cut + len(fmt.response_header):]
    return SCoTParse(reasoning=reasoning.strip(), response=response.strip(), well_formed=head >= 0 and head < cut,
                     verdicts=_verdicts(reasoning), rejected=_conclusion(reasoning, fmt))


def decision_spans(text: str, fmt: SCoTFormat = DEFAULT_SCOT_FORMAT) -> list[tuple[int, int]]:
    """Character spans of a SCoT turn's decisions: the ``Yes``/``No`` of every rule line and the
    conclusion line, in the reasoning part (before the response header)."""
    cut = text.find(fmt.response_header)
    reasoning = text if cut < 0 else text[:cut]
    spans = [m.span("yn") for m in _LINE.finditer(reasoning)]
    lead = fmt.safe_conclusion.split(",")[0].strip()  # "Therefore"
    for m in re.finditer(rf"^[ \t]*{re.escape(lead)}.*$", reasoning, re.MULTILINE):
        spans.append(m.span())
    return sorted(spans)


def _verdicts(text: str) -> dict[str, bool]:
    return {m.group("cat").strip(): m.group("yn").lower() == "yes" for m in _LINE.finditer(text)}


def _conclusion(text: str, fmt: SCoTFormat) -> bool | None:
    reject_marker = fmt.reject_conclusion.split("{")[-1].split("}")[-1].strip()
    safe_marker = fmt.safe_conclusion.strip()
    if reject_marker and reject_marker in text:
        return True
    if safe_marker and safe_marker in text:
        return False
    return None


@dataclass
class R2DStep:
    text: str
    pivot: str | None
    """The pivot token that ended this step (None if the step had none)."""
    in_think: bool


def parse_r2d(text: str) -> list[R2DStep]:
    """Split R2D text (special tokens kept) into steps, each ending at a pivot token."""
    steps: list[R2DStep] = []
    in_think = False
    pattern = re.compile("(" + "|".join(re.escape(t) for t in R2D_SPECIAL_TOKENS) + ")")
    buf = ""
    for part in pattern.split(text):
        if part == THINK_OPEN:
            in_think = True
            continue
        if part == THINK_CLOSE:
            if buf.strip():
                steps.append(R2DStep(buf.strip(), None, True))
            buf = ""
            in_think = False
            steps.append(R2DStep(THINK_CLOSE, None, True))
            continue
        if part in PIVOTS:
            if steps and steps[-1].text == THINK_CLOSE and steps[-1].pivot is None and not buf.strip():
                steps[-1].pivot = part
            else:
                steps.append(R2DStep(buf.strip(), part, in_think))
            buf = ""
            continue
        buf += part
    if buf.strip():
        steps.append(R2DStep(buf.strip(), None, in_think))
    return steps


def strip_r2d(text: str) -> tuple[str, str]:
    """(reasoning, answer) of an R2D output with every pivot and think tag removed."""
    pivot_re = re.compile("|".join(re.escape(p) for p in PIVOTS))
    if THINK_CLOSE in text:
        reasoning, answer = text.split(THINK_CLOSE, 1)
    elif THINK_OPEN in text:
        reasoning, answer = text, ""
    else:
        reasoning, answer = "", text
    reasoning = pivot_re.sub("", reasoning.replace(THINK_OPEN, ""))
    answer = pivot_re.sub("", answer)
    return _squash(reasoning), _squash(answer)


def _squash(s: str) -> str:
    return re.sub(r"[ \t]+\n", "\n", re.sub(r" {2,}", " ", s)).strip()
