"""Turn structured reasoning into the exact assistant text of a SCoT or R2D training example."""

from __future__ import annotations

from ..data._formats import DEFAULT_SCOT_FORMAT, THINK_CLOSE, THINK_OPEN, SCoTFormat
from ..data._policy import Policy
from ._types import R2DTrace, SCoTReasoning


def render_scot(reasoning: SCoTReasoning, response: str, policy: Policy,
                fmt: SCoTFormat = DEFAULT_SCOT_FORMAT) -> str:
    """One line per enabled rule (in policy order), the conclusion, then the response.

    Verdicts for rules the policy does not enable are dropped; missing ones read 'No.'.
    """
    by_id = {v.category: v for v in reasoning.verdicts}
    lines = [fmt.verify_header, reasoning.intent]
    violated = []
    for rule_id in policy.ids:
        v = by_id.get(rule_id)
        if v is not None and v.violated:
            violated.append(rule_id)
            lines.append(fmt.yes_line.format(category=rule_id, reason=v.reason.strip() or "It breaks this rule."))
        else:
            lines.append(fmt.no_line.format(category=rule_id))
    if violated:
        lines.append(fmt.reject_conclusion.format(categories=", ".join(violated)))
    else:
        lines.append(fmt.safe_conclusion)
    lines.append(fmt.response_header)
    lines.append(response.strip())
    return "\n".join(lines)


def render_r2d(trace: R2DTrace, answer: str) -> str:
    """``<think>`` steps each ending with a pivot, ``</think> [SAFE]``, the answer and ``[SAFE]``.

    The answer that follows a finished think block is always what the model should say (a refusal
    for harmful requests), so both closing pivots are ``[SAFE]``.
    """
    body = "\n".join(f"{s.text.strip()} [{s.pivot}]" for s in trace.steps)
    return f"{THINK_OPEN}\n{body}\n{THINK_CLOSE} [SAFE]\n{answer.strip()} [SAFE]"
