"""SCoT's question-evolution styles as evaluation attacks.

One attack per style of :data:`safethink.synth._evolve.STYLES` (slang, uncommon dialects, role play,
evidence-based persuasion, logical appeal, expert endorsement), named after the style with hyphens
(``role-play``). Offline the style's rules rewrite the request (the same rules the data builder
uses); with ``model=`` an LLM rewrites it from the same instructions and few-shot examples the data
builder sends its teacher. Each attack's ``style`` is the style name the training manifest records,
so an evaluation splits attacks seen in training from unseen ones without a hand-written map.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..data._schema import PromptRecord
from ..errors import SpecError
from ..models import ChatModel
from ..synth._evolve import STYLES, is_refusal_start, load_styles, norm_prompt, rewrite_messages, rule_rewrite
from ._base import ATTACKS, AttackBase, Built
from ._llm import clean_rewrite, resolve_model, sample_config

SCOT_PAPER = "https://arxiv.org/abs/2501.19180"


def parse_rewrite(reply: str, original: str) -> str | None:
    """The rewrite in a model's reply (``{"rewrite": ...}`` JSON, or the bare text); None when the
    reply holds no usable rewrite: empty, the original again, or the model declining."""
    text: str | None = None
    start, end = reply.find("{"), reply.rfind("}")
    if 0 <= start < end:
        try:
            obj = json.loads(reply[start:end + 1])
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("rewrite"), str):
            text = obj["rewrite"].strip()
    if text is None:
        m = re.search(r'"rewrite"\s*:\s*"((?:[^"\\]|\\.)*)', reply)
        text = m.group(1).strip() if m else clean_rewrite(re.sub(r"^\s*rewrite\s*:\s*", "", reply, flags=re.I))
    if not text or not norm_prompt(text) or norm_prompt(text) == norm_prompt(original) or is_refusal_start(text):
        return None
    return text


@dataclass(kw_only=True)
class EvolutionAttack(AttackBase):
    """Rewrite the request in one training evolution style: rules offline, an LLM with ``model``."""

    family = "rewrite"
    paper = SCOT_PAPER
    tags = ("evolution",)
    randomised = True
    request_form = "rewritten"
    style: ClassVar[str]

    model: Any = None
    """The rewriting model (a ChatModel or a model spec string); None rewrites by the style's rules."""
    shots: int = 2
    """Few-shot examples from the style's data put in the model's prompt (as the data builder does)."""
    model_max_new_tokens: int = 200
    model_temperature: float = 0.7
    _model: ChatModel | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.shots < 0:
            raise SpecError(f"{self.name}: shots must be >= 0")
        if self.model is not None:
            self._model = resolve_model(self.model, what=self.name)

    def build(self, records: Sequence[PromptRecord], rngs: Sequence[random.Random],
              target: ChatModel | None) -> list[Built]:
        spec = load_styles()[self.style]
        # The rule rewrite is drawn first in every case, so a record's rng stream (and with it the
        # fallback) does not depend on whether a model ran.
        rules = [rule_rewrite(r.user_text(), spec, g) for r, g in zip(records, rngs)]
        if self._model is None:
            return [Built([{"role": "user", "content": text}], meta={"rewriter": "rules"}) for text in rules]
        examples = (spec.get("examples") or [])[:self.shots]
        convs = [rewrite_messages(r.user_text(), self.style, examples) for r in records]
        cfg = sample_config(rngs[0], max_new_tokens=self.model_max_new_tokens, temperature=self.model_temperature)
        replies = [o.text for o in self._model.generate(convs, cfg)]
        out = []
        for r, rule, reply in zip(records, rules, replies):
            text = parse_rewrite(reply, r.user_text())
            meta = {"rewriter": "model" if text else "rules", "model": getattr(self._model, "spec", str(self.model)),
                    "fallback": text is None}
            if text is None:
                meta["model_reply"] = reply[:500]
            out.append(Built([{"role": "user", "content": text or rule}], meta=meta))
        return out


def _register(style: str) -> type[EvolutionAttack]:
    desc = " ".join(str(load_styles()[style]["description"]).split())
    cls_name = "".join(w.title() for w in style.split("_")) + "Evolution"
    cls = type(cls_name, (EvolutionAttack,), {
        "__module__": __name__, "__qualname__": cls_name, "__doc__": f"SCoT evolution style {style!r}.",
        "name": style.replace("_", "-"), "style": style,
        "description": f"SCoT evolution style {style}: {desc} Rules offline, or an LLM rewrite with model=.",
    })
    return ATTACKS.register()(dataclass(kw_only=True)(cls))


EVOLUTION_ATTACKS: dict[str, type[EvolutionAttack]] = {s: _register(s) for s in STYLES}
"""Training style name -> the attack class that stands for it."""
