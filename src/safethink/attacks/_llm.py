"""Helpers for attacks that use an attacker model and a judge: resolving specs, parsing replies."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence

from ..errors import SpecError
from ..judges._base import Judge, JudgeInput, Verdict
from ..models import ChatModel, GenerationConfig


def resolve_model(model: ChatModel | str | None, *, what: str) -> ChatModel:
    """A ChatModel object as is; a spec string loaded with :func:`safethink.models.load_model`."""
    if model is None:
        raise SpecError(f"{what}: an attacker model is required (a ChatModel or a model spec string)")
    if isinstance(model, str):
        from ..models import load_model

        return load_model(model)
    if not callable(getattr(model, "generate", None)):
        raise SpecError(f"{what}: attacker must be a ChatModel or a model spec string, got {type(model).__name__}")
    return model


def resolve_judge(judge: Judge | str | None, *, what: str) -> Judge:
    """A Judge object as is; a registered judge name is built from the judges registry."""
    if judge is None:
        raise SpecError(f"{what}: a judge is required (a Judge object or a registered judge name)")
    if isinstance(judge, str):
        import importlib

        importlib.import_module("safethink.judges")  # populates the registry
        from ..judges._base import JUDGES

        return JUDGES.create(judge)
    if not callable(getattr(judge, "judge", None)):
        raise SpecError(f"{what}: judge must have a judge(items) method, got {type(judge).__name__}")
    return judge


def judge_batch(judge: Judge, goal: str, prompts: Sequence[str], responses: Sequence[str]) -> list[Verdict]:
    items = [JudgeInput(prompt=goal, response=r, sent_prompt=p) for p, r in zip(prompts, responses)]
    verdicts = judge.judge(items)
    if len(verdicts) != len(items):
        raise SpecError(f"judge {getattr(judge, 'spec', judge)!r} returned {len(verdicts)} verdicts for {len(items)} inputs")
    return verdicts


def success_score(v: Verdict) -> float:
    """The score the search maximises: a refusal counts as zero whatever the judge's score."""
    return 0.0 if v.refused else float(v.score)


def sample_config(rng: random.Random, *, max_new_tokens: int, temperature: float) -> GenerationConfig:
    return GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature,
                            top_p=0.95 if temperature > 0 else 1.0, seed=rng.randrange(2**31))


_PROMPT_FIELD = re.compile(r'"prompt"\s*:\s*"((?:[^"\\]|\\.)*)"', re.S)
# A reply cut off by max_new_tokens: the prompt string never closes.
_PROMPT_OPEN = re.compile(r'"prompt"\s*:\s*"((?:[^"\\]|\\.)*)\\?$', re.S)


def parse_attacker_prompt(text: str) -> str | None:
    """The ``prompt`` field of the attacker's JSON reply; tolerant of prose around it.

    Returns None when the reply holds no usable prompt, so the caller can fall back.
    """
    start = text.find("{")
    while start != -1:
        end = text.rfind("}")
        while end > start:
            try:
                obj = json.loads(text[start:end + 1])
            except json.JSONDecodeError:
                end = text.rfind("}", start, end)
                continue
            if isinstance(obj, dict) and isinstance(obj.get("prompt"), str) and obj["prompt"].strip():
                return obj["prompt"].strip()
            break
        start = text.find("{", start + 1)
    m = _PROMPT_FIELD.search(text) or _PROMPT_OPEN.search(text.rstrip())
    if m:
        try:
            value = json.loads(f'"{m.group(1)}"')
        except json.JSONDecodeError:
            value = m.group(1)
        if value.strip():
            return value.strip()
    return None


def clean_rewrite(text: str) -> str | None:
    """A rewrite reply without quotes or a leading label; None when empty."""
    t = text.strip().strip('"').strip()
    t = re.sub(r"^(rewritten request|request|translation|question)\s*:\s*", "", t, flags=re.I)
    return t or None

