"""Rewrite attacks: the request restated (past tense, persuasion) or translated, by rules or by an
attacker model."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..data._schema import PromptRecord
from ..errors import SpecError
from ..models import ChatModel, GenerationConfig
from ._base import ATTACKS, AttackBase, Built
from ._data import fill, package_data
from ._llm import clean_rewrite, resolve_model, sample_config

# Meta-requests ("write a tutorial on how to ...") whose real ask is the clause after "how to".
_META = re.compile(
    r"^(?:please\s+)?(?:write|create|give|provide|develop|generate|draft|compose|produce|outline|explain|describe|tell)"
    r"(?:\s+me)?(?:\s+(?:a|an|the|some))?(?:\s+(?:detailed|step-by-step|short|complete|clear|brief))*"
    r"(?:\s+(?:tutorial|guide|instructions|explanation|plan|manual|article|post|script|tips|list|steps))?"
    r"(?:\s+(?:on|for|about|explaining|describing))?\s+how\s+(?:to|one\s+could|someone\s+could)\s+",
    re.I,
)


def past_tense_rule(request: str, rng: random.Random) -> str:
    """Offline past-tense reformulation: 'Write a guide on how to X' -> 'How did people X in the past?'."""
    cfg = package_data("templates.yaml")["past_tense"]
    text = request.strip().rstrip(".?! ")
    m = _META.match(text)
    if m:
        clause = text[m.end():]
    else:
        low = text.lower()
        clause = text
        for pre in cfg["question_prefixes"]:
            if low.startswith(pre):
                clause = text[len(pre):]
                break
    clause = clause[:1].lower() + clause[1:]
    clause = re.sub(r"\b(my|your)\b", "their", clause, flags=re.I)
    clause = re.sub(r"\b(me|you)\b", "them", clause, flags=re.I)
    return rng.choice(cfg["frames"]).replace("{clause}", clause)


@dataclass(kw_only=True)
class _AttackerRewrite(AttackBase):
    """Shared code: one attacker prompt per record, the reply (cleaned) is the new request."""

    attacker: Any = None
    """The attacker: a ChatModel or a model spec string."""
    attacker_max_new_tokens: int = 200
    attacker_temperature: float = 0.7
    _attacker: ChatModel | None = field(default=None, init=False, repr=False)

    def _model(self) -> ChatModel:
        if self._attacker is None:
            self._attacker = resolve_model(self.attacker, what=self.name)
        return self._attacker

    def _ask(self, prompts: list[str], rngs: Sequence[random.Random]) -> list[str]:
        # One sampling seed per call, drawn from the first record's stream: batch results are
        # reproducible for a seed; the per-record streams keep per-record choices stable.
        cfg = sample_config(rngs[0], max_new_tokens=self.attacker_max_new_tokens, temperature=self.attacker_temperature)
        outs = self._model().generate([[{"role": "user", "content": p}] for p in prompts], cfg)
        return [o.text for o in outs]


@ATTACKS.register()
@dataclass(kw_only=True)
class PastTense(_AttackerRewrite):
    name = "past-tense"
    family = "rewrite"
    paper = "https://arxiv.org/abs/2407.11969"
    description = "The request asked about the past ('How did people ...?'): rules offline, or an attacker model."
    randomised = True
    request_form = "rewritten"

    def build(self, records: Sequence[PromptRecord], rngs: Sequence[random.Random],
              target: ChatModel | None) -> list[Built]:
        if self.attacker is None:
            return [Built([{"role": "user", "content": past_tense_rule(r.user_text(), g)}], meta={"rewriter": "rules"})
                    for r, g in zip(records, rngs)]
        tmpl = package_data("model_prompts.yaml")["past_tense"]
        replies = self._ask([fill(tmpl, request=r.user_text()) for r in records], rngs)
        out = []
        for r, g, reply in zip(records, rngs, replies):
            text = clean_rewrite(reply)
            meta = {"rewriter": "attacker", "fallback": text is None}
            out.append(Built([{"role": "user", "content": text or past_tense_rule(r.user_text(), g)}], meta=meta))
        return out


@ATTACKS.register()
@dataclass(kw_only=True)
class Persuasion(_AttackerRewrite):
    name = "persuasion"
    family = "model-driven"
    paper = "https://arxiv.org/abs/2401.06373"
    description = "Persuasive paraphrase (PAP) of the request by an attacker model, one taxonomy technique per record."
    randomised = True
    request_form = "generated"
    needs = ("attacker",)
    technique: str | None = None
    """A technique id from the built-in taxonomy; None picks one per record by seed."""

    def __post_init__(self) -> None:
        known = package_data("persuasion.yaml")["techniques"]
        if self.technique is not None and self.technique not in known:
            raise SpecError(f"persuasion: unknown technique {self.technique!r}; known: {', '.join(known)}")
        self._model()

    def build(self, records: Sequence[PromptRecord], rngs: Sequence[random.Random],
              target: ChatModel | None) -> list[Built]:
        techniques = package_data("persuasion.yaml")["techniques"]
        tmpl = package_data("model_prompts.yaml")["persuasion"]
        chosen = [self.technique or g.choice(sorted(techniques)) for g in rngs]
        prompts = [fill(tmpl, request=r.user_text(), technique_name=techniques[t]["name"],
                        technique_definition=techniques[t]["definition"]) for r, t in zip(records, chosen)]
        replies = self._ask(prompts, rngs)
        out = []
        for r, t, reply in zip(records, chosen, replies):
            text = clean_rewrite(reply)
            out.append(Built([{"role": "user", "content": text or r.user_text()}],
                             meta={"technique": t, "fallback": text is None}))
        return out


@ATTACKS.register()
@dataclass(kw_only=True)
class Translation(_AttackerRewrite):
    name = "translation"
    family = "model-driven"
    paper = "https://arxiv.org/abs/2310.02446"
    description = "The request translated into a low-resource language by an attacker model; the answer translated back."
    request_form = "generated"
    needs = ("attacker",)
    language: str = "Zulu"
    attacker_temperature: float = 0.0
    answer_instruction: bool = True
    """Append 'Answer in <language>.' so the answer stays in the low-resource language."""

    def __post_init__(self) -> None:
        if not self.language.strip():
            raise SpecError("translation: language must be a language name")
        self._model()

    def build(self, records: Sequence[PromptRecord], rngs: Sequence[random.Random],
              target: ChatModel | None) -> list[Built]:
        tmpl = package_data("model_prompts.yaml")["translate_to"]
        replies = self._ask([fill(tmpl, text=r.user_text(), language=self.language) for r in records], rngs)
        out = []
        for r, reply in zip(records, replies):
            text = clean_rewrite(reply)
            content = text or r.user_text()
            if self.answer_instruction:
                content += f"\n\n(Answer in {self.language}.)"
            out.append(Built([{"role": "user", "content": content}],
                             meta={"language": self.language, "translated_request": text, "fallback": text is None}))
        return out

    def decode_response(self, text: str) -> str:
        """Translate the answer back into English with the attacker model (greedy)."""
        if not text.strip():
            return text
        tmpl = package_data("model_prompts.yaml")["translate_back"]
        cfg = GenerationConfig(max_new_tokens=max(64, min(1024, 2 * len(text.split()) + 32)))
        out = self._model().generate([[{"role": "user", "content": fill(tmpl, text=text, language=self.language)}]], cfg)
        return clean_rewrite(out[0].text) or text
