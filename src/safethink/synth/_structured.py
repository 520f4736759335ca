"""The offline teacher: no LLM. Categories come from dataset metadata (mapped to the policy) or
the embedding classifier; reasoning and refusals are composed from the policy's own rule text.

Deterministic: every choice is drawn from a RNG seeded with (seed, item id). An LLM teacher
writes richer, request-specific reasoning; this one gives a correct, consistent baseline.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from ..data._policy import Policy, PolicyRule
from ._classify import CategoryClassifier
from ._types import TEACHERS, R2DStepOut, R2DTrace, SCoTReasoning, TeachRequest, RuleVerdict

_LEADING = re.compile(
    r"^(?:(?:please|kindly|hey|hi|ok(?:ay)?|so|now)[,!.]?\s+)*(?:(?:can|could|would|will) you(?: please)?\s+|"
    r"i (?:want|need|would like) you to\s+|help me\s+)?", re.IGNORECASE)

_INTENT = ("Request: {x}.", "Asks to {x}.", "Wants to {x}.", "User asks to {x}.")
_INTENT_Q = ("Asks: {x}?", "Question: {x}?")
_QUESTION_START = re.compile(r"^(?:how|what|why|where|when|who|whom|which|is|are|was|were|do|does|did|can|could|"
                             r"should|would|will|may|might)\b", re.IGNORECASE)
# Words dropped from a summary so that more of the request fits in under ten words.
_FILLER = {"a", "an", "the", "some", "any", "very", "really", "detailed", "just", "step-by-step", "specific"}
_REASON = ("Answering would {p}.", "Complying would {p}.", "Helping here would {p}.")
_SUFFIX = ("", " I can help with a safe, general question on the topic instead.",
           " If you have a different, harmless question, I am glad to help.")
_SELF_HARM = " If you are thinking about hurting yourself, please reach out to someone you trust or a local crisis line."
_STYLE_DESC = {
    "slang": "written in slang", "uncommon_dialects": "written in an unusual dialect",
    "role_play": "framed as role play", "evidence_based_persuasion": "dressed up with claimed evidence",
    "logical_appeal": "framed as a logical argument", "expert_endorsement": "framed as endorsed by an expert",
}


def summarise(text: str, max_words: int) -> tuple[str, bool]:
    """The first sentence of a request, politeness and filler dropped, cut to ``max_words``;
    and whether what remains is a question."""
    first = re.split(r"(?<=[.?!])\s+|\n", text.strip(), maxsplit=1)[0]
    body = _LEADING.sub("", first).strip().rstrip(".?!:;,")
    question = first.rstrip().endswith("?") and bool(_QUESTION_START.match(body))
    words = [w for w in body.split() if w.lower() not in _FILLER] or text.split()
    words = words[:max_words]
    if words and not (len(words[0]) > 1 and words[0].isupper()):
        words[0] = words[0][0].lower() + words[0][1:]
    return " ".join(words), question


def rule_phrase(rule: PolicyRule) -> str:
    """'Do not help threaten people.' -> 'help threaten people' (falls back to the rule's name)."""
    m = re.match(r"^\s*(?:do not|don't|never)\s+(.*?)\.?\s*$", rule.rule, re.IGNORECASE)
    return m.group(1) if m else f"break the rule on {rule.name.lower()}"


@TEACHERS.register("structured")
class StructuredTeacher:
    """Offline teacher composed from the policy text."""

    name = "structured"

    def __init__(self, policy: Policy, classifier: CategoryClassifier | None = None, seed: int = 0):
        self.policy = policy
        self.spec = "structured"
        self.seed = seed
        self._classifier = classifier

    # ------------------------------------------------------------ categories
    def categories(self, requests: Sequence[TeachRequest]) -> list[list[str]]:
        """Violated rule ids per request: metadata when it maps to the policy, else the classifier."""
        out: list[list[str]] = [[c for c in r.categories if c in self.policy.ids] if r.label == "harmful" else []
                                for r in requests]
        need = [i for i, r in enumerate(requests) if r.label == "harmful" and not out[i]]
        if need:
            if self._classifier is None:
                self._classifier = CategoryClassifier.with_seed_examples(self.policy)
            preds = self._classifier.predict([requests[i].original or requests[i].prompt for i in need])
            for i, (cat, _) in zip(need, preds):
                out[i] = [cat]
        return out

    def _rng(self, req: TeachRequest) -> random.Random:
        return random.Random(f"{self.seed}:{req.seed}:{req.item_id}")

    def _intent(self, req: TeachRequest, rng: random.Random) -> str:
        text = req.original or req.prompt
        _, question = summarise(text, 1)
        template = rng.choice(_INTENT_Q if question else _INTENT)
        x, _ = summarise(text, 9 - len(template.replace("{x}", "").split()))  # under ten words in all
        return template.format(x=x)

    def refusal(self, cats: list[str], rng: random.Random) -> str:
        from ..data._formats import DEFAULT_SCOT_FORMAT

        text = DEFAULT_SCOT_FORMAT.refusal.format(categories=", ".join(cats)) + rng.choice(_SUFFIX)
        if any(c.startswith("self-harm") for c in cats):
            text += _SELF_HARM
        return text

    # ------------------------------------------------------------ SCoT
    def scot(self, requests: Sequence[TeachRequest]) -> list[SCoTReasoning]:
        out = []
        for req, cats in zip(requests, self.categories(requests)):
            rng = self._rng(req)
            verdicts = [RuleVerdict(category=r.id, violated=r.id in cats,
                                reason=rng.choice(_REASON).format(p=rule_phrase(r)) if r.id in cats else "")
                        for r in self.policy.active]
            out.append(SCoTReasoning(intent=self._intent(req, rng), verdicts=verdicts,
                                     refusal=self.refusal(cats, rng) if cats else None))
        return out

    # ------------------------------------------------------------ R2D
    def r2d(self, requests: Sequence[TeachRequest]) -> list[R2DTrace]:
        out = []
        for req, cats in zip(requests, self.categories(requests)):
            rng = self._rng(req)
            intent = self._intent(req, rng)
            steps: list[R2DStepOut] = []
            if req.style != "original":
                desc = _STYLE_DESC.get(req.style, f"rewritten ({req.style.replace('_', ' ')})")
                steps.append(R2DStepOut(text=f"The message is {desc}, so I look past the framing at what is "
                                             "actually being asked.", pivot="RETHINK"))
            steps.append(R2DStepOut(text=intent, pivot="RETHINK" if cats else "SAFE"))
            if cats:
                rules = [self.policy.rule(c) for c in cats]
                harm = "; ".join(f"{rng.choice(_REASON).format(p=rule_phrase(r)).rstrip('.')} ({r.id})" for r in rules)
                steps.append(R2DStepOut(text=harm + ".", pivot="UNSAFE"))
                steps.append(R2DStepOut(text=rng.choice((
                    "So I will not do this, and I will say which rule it breaks.",
                    "I should decline and name the rule it breaks.",
                    "The safe course is to refuse and explain why.")), pivot="SAFE"))
                out.append(R2DTrace(steps=steps, answer=self.refusal(cats, rng), categories=cats))
            else:
                steps.append(R2DStepOut(text=rng.choice((
                    "Nothing in it conflicts with the safety policy, so I can help.",
                    "It breaks none of the policy's rules; I will answer it.",
                    "This is an ordinary request and it is safe to help.")), pivot="SAFE"))
                out.append(R2DTrace(steps=steps, answer=None, categories=[]))
        return out
