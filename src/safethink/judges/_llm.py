"""LLM-as-judge over any :class:`~safethink.models.ChatModel`: the prompt hygiene and the judge base that the
harm judges (``_harm.py``: HarmBench, Llama Guard, StrongREJECT) share. The prompts are data
(``data/llm_judge_prompts.yaml``).

Each judge reads a pair in one of two input formats (``template=``):

- ``rubric``: safethink's own rubric prompt (system + user message), for any instruction-following
  chat model (GPT-4o, Llama-3-Instruct, ...). The judged text is wrapped in tags named with a fresh
  random boundary and ``& < >`` inside it are escaped: it can neither close the tag nor forge one.
- ``model``: the input format of a model trained as that judge. Llama Guard's own chat template
  renders the policy and the conversation, so the pair goes to it as ``user`` / ``assistant``
  messages (an OpenAI-compatible server applies the template; a local ``hf:`` model is rendered with
  its tokenizer's ``apply_chat_template``). The HarmBench classifier is completion-style: its prompt
  is plain text, sent to the endpoint's ``/completions`` route or tokenised as is for a local model.
  A model's format cannot be told that its data is escaped, so only the markers that delimit turns
  and fields are escaped in the judged text (special tokens, ``[INST]``, a line starting ``Agent:``).

A rubric reply that cannot be parsed is asked again (with a format reminder, sampling on, seeded) up
to ``max_retries`` times; a classifier in its own format is asked once (sampling it would make its
label random). A reply still unparsed gives a refused/0 verdict flagged ``details["unparsed"]`` and
is counted in ``judge.counts`` (or raises with ``on_unparseable="raise"``).
"""

from __future__ import annotations

import html
import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from ..errors import BackendError, SpecError
from ._base import JudgeInput, Verdict
from ._common import BaseJudge, JudgeConfig

log = logging.getLogger(__name__)

_ENTRY_KEYS = {"system", "user", "retry", "categories", "model"}
_MODEL_KEYS = {"kind", "text", "labels", "max_new_tokens", "categories"}


@lru_cache(maxsize=1)
def judge_prompts() -> dict[str, dict[str, Any]]:
    import yaml

    text = resources.files(__package__).joinpath("data", "llm_judge_prompts.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def new_boundary(*texts: str) -> str:
    """A tag name no judged text contains (random, so it cannot be guessed in advance)."""
    while True:
        tag = f"data_{secrets.token_hex(8)}"
        if not any(tag in t for t in texts):
            return tag


# Markers that chat templates and classifier formats use to delimit turns and fields: the special
# tokens of Llama 3 / ChatML / Phi (<|eot_id|>, <|im_start|>), Llama 2 / Mistral (<s>, [INST], <<SYS>>),
# Gemma (<start_of_turn>), and Llama Guard's section lines (<BEGIN CONVERSATION>).
_MARKERS = re.compile(r"<\|[^<>|\n]{1,64}\|>|</?s>|\[/?INST\]|<</?SYS>>|<(?:start|end)_of_turn>"
                      r"|<(?:BEGIN|END) [A-Z][A-Z ]{0,60}>")
_ENTITIES = {"<": "&lt;", ">": "&gt;", "[": "&#91;", "]": "&#93;"}


def _defang(marker: str) -> str:
    out = "".join(_ENTITIES.get(c, c) for c in marker)
    return out if out != marker else f"&#{ord(marker[0])};{marker[1:]}"


def escape_untrusted(text: str) -> str:
    """For rubric prompts: escape ``& < >`` (so the text cannot open or close a tag) and the
    brackets of ``[INST]``-style control markers."""
    return _MARKERS.sub(lambda m: _defang(m.group(0)), html.escape(text, quote=False))


def neutralise_markers(text: str, labels: Sequence[str] = (), special_tokens: Sequence[str] = ()) -> str:
    """For a model's own input format: escape, as HTML entities, only what could end the text's turn
    or open a forged field (control markers, the model's special tokens, and the colon of a format
    label such as ``Agent:`` at the start of a line); everything else reaches the model as written."""
    extra = [t for t in special_tokens if t and len(t) > 1]
    if extra:
        text = re.sub("|".join(map(re.escape, sorted(extra, key=len, reverse=True))),
                      lambda m: _defang(m.group(0)), text)
    text = _MARKERS.sub(lambda m: _defang(m.group(0)), text)
    if labels:
        names = "|".join(map(re.escape, labels))
        text = re.sub(rf"^([ \t]*(?:{names})[ \t]*):", r"\1&#58;", text, flags=re.I | re.M)
    return text


def build_judge_prompt(template: str, *, request: str, response: str, **extra: str) -> tuple[str, str]:
    """Fill a rubric template with escaped, boundary-tagged text; returns ``(prompt, tag)``."""
    tag = new_boundary(request, response)
    prompt = template.format(request=escape_untrusted(request), response=escape_untrusted(response), tag=tag, **extra)
    return prompt, tag


@dataclass(frozen=True)
class Parsed:
    refused: bool
    score: float
    explanation: str
    details: dict[str, Any]


@dataclass(frozen=True)
class _Reply:
    text: str
    prompt_tokens: int | None = None


class LLMJudgeConfig(JudgeConfig):
    model: Any = None
    """The judge model: a spec string (``openai:<model>@<url>``, ``hf:<path>``, ...) or a ChatModel."""
    template: Literal["model", "rubric"] = "rubric"
    """``rubric``: safethink's rubric prompt, for any chat model. ``model``: the input format the judge
    model was trained on (Llama Guard's own chat template, the HarmBench classifier's prompt)."""
    prompts_file: str | None = None
    """A YAML file whose keys replace this judge's shipped prompts (the same keys as its entry in
    ``data/llm_judge_prompts.yaml``), e.g. a classifier's published prompt text."""
    max_new_tokens: int | None = Field(default=None, ge=1)
    """Judge reply budget (default: what the rubric or the model format needs)."""
    max_retries: int = Field(default=2, ge=0)
    """Re-asks for a rubric reply that cannot be parsed (a model's own format is asked once)."""
    on_unparseable: Literal["raise", "zero"] = "zero"
    """After the retries: return a refused/0 verdict flagged ``unparsed`` (counted in
    ``judge.counts``), or raise an error."""
    batch_size: int = Field(default=8, ge=1)
    """Judge requests in flight (HTTP) or decoded together (local)."""
    seed: int = 0
    """Seed for the sampled retries, so a run can be reproduced."""


class LLMJudge(BaseJudge):
    """A judge model's reply, to a rubric prompt or in the model's own format, parsed into a verdict."""

    Config: ClassVar[type[JudgeConfig]] = LLMJudgeConfig
    rubric: ClassVar[str]
    default_max_new_tokens: ClassVar[int] = 16

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        cfg: LLMJudgeConfig = self.config  # type: ignore[assignment]
        if cfg.model is None:
            raise SpecError(f"judge {self.name!r} needs model=<model spec> (e.g. openai:<model>@<url>)")
        self.prompts = _load_prompts(self.name, judge_prompts()[self.rubric], cfg.prompts_file)
        self.format: dict[str, Any] | None = self.prompts.get("model") if cfg.template == "model" else None
        if cfg.template == "model" and not self.format:
            raise SpecError(f"judge {self.name!r}: no model input format is defined (use template=rubric)")
        if isinstance(cfg.model, str):
            from ..models import load_model

            self.model = load_model(cfg.model)
        elif callable(getattr(cfg.model, "generate", None)):
            self.model = cfg.model
        else:
            raise SpecError(f"judge {self.name!r}: model must be a spec string or a ChatModel, "
                            f"got {type(cfg.model).__name__}")
        self._local = _is_local_hf(self.model)
        self._http = _is_openai(self.model)
        if self.format:
            self._check_backend()
        self.counts: dict[str, int] = {"judged": 0, "unparsed": 0, "retried": 0}
        """Running totals over every call: verdicts given, replies left unparsed, rubric re-asks."""

    def _check_backend(self) -> None:
        assert self.format is not None
        if self.format["kind"] == "completion" and not (self._local or self._http):
            raise SpecError(f"judge {self.name!r}: template=model sends a plain-text prompt, which needs an "
                            f"OpenAI-compatible endpoint (openai:<model>@<url>, /completions route) or a local "
                            f"hf: model, not {self.model.spec!r}")
        if self.format["kind"] == "chat" and self._local and not getattr(self.model.tokenizer, "chat_template", None):
            raise SpecError(f"judge {self.name!r}: {self.model.spec} has no chat template; template=model "
                            "renders the conversation with the model's own template (use template=rubric)")

    # -- what is sent ---------------------------------------------------------------------------

    def render(self, item: JudgeInput) -> str:
        """The rubric prompt's user message for one pair."""
        return build_judge_prompt(self.prompts["user"], request=item.prompt, response=item.response)[0]

    def model_inputs(self, items: Sequence[JudgeInput]) -> list[Any]:
        """Exactly what is sent for each pair: a conversation (chat messages), or the text a local
        model tokenises or an endpoint's ``/completions`` route receives."""
        if self.format is None:
            return [[{"role": "system", "content": self.prompts["system"]},
                     {"role": "user", "content": self.render(it)}] for it in items]
        specials = list(getattr(self.model.tokenizer, "all_special_tokens", ())) if self._local else []
        labels = self.format.get("labels") or ()

        def safe(text: str) -> str:
            return neutralise_markers(text, labels, specials)

        if self.format["kind"] == "completion":
            return [self.format["text"].format(behavior=safe(it.prompt), generation=safe(it.response)) for it in items]
        convs = [[{"role": "user", "content": safe(it.prompt)}, {"role": "assistant", "content": safe(it.response)}]
                 for it in items]
        if self._local:  # the model's own template, exactly as its tokenizer renders it
            return [self.model.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                    for c in convs]
        return convs

    def _ask(self, inputs: list[Any], gen: Any) -> list[_Reply]:
        if inputs and isinstance(inputs[0], str):
            if self._local:  # a chat template places BOS itself; a plain prompt gets the tokenizer's
                plain = self.format is not None and self.format["kind"] == "completion"
                out = _generate_local(self.model, inputs, gen, add_special_tokens=plain)
            else:  # the endpoint's /completions route, through the model's own HTTP client and retries
                out = [_Reply(c.text, c.prompt_tokens) for c in self.model.complete_prompts(inputs, gen)]
        else:
            out = [_Reply(c.text, c.prompt_tokens) for c in self.model.generate(inputs, gen)]
        if len(out) != len(inputs):
            raise BackendError(f"judge model {self.model.spec!r} returned {len(out)} replies for {len(inputs)}")
        return out

    # -- what comes back ------------------------------------------------------------------------

    def parse(self, reply: str) -> Parsed | None:
        raise NotImplementedError

    def judge(self, items: Sequence[JudgeInput]) -> list[Verdict]:
        from ..models import GenerationConfig

        cfg: LLMJudgeConfig = self.config  # type: ignore[assignment]
        max_tokens = cfg.max_new_tokens or (self.format or {}).get("max_new_tokens") or self.default_max_new_tokens

        def gen(attempt: int) -> GenerationConfig:
            return GenerationConfig(max_new_tokens=max_tokens, batch_size=cfg.batch_size,
                                    temperature=0.0 if attempt == 0 else 0.7, seed=cfg.seed + attempt)

        sent = self.model_inputs(items)
        first = self._ask(sent, gen(0)) if sent else []
        replies = [r.text for r in first]
        results = [self.parse(t) for t in replies]
        tries = [1] * len(items)
        retries = cfg.max_retries if self.format is None else 0
        for attempt in range(1, retries + 1):
            todo = [i for i, r in enumerate(results) if r is None]
            if not todo:
                break
            asked = [[*sent[i], {"role": "assistant", "content": replies[i] or "(empty)"},
                      {"role": "user", "content": self.prompts["retry"]}] for i in todo]
            self.counts["retried"] += len(todo)
            for i, out in zip(todo, self._ask(asked, gen(attempt))):
                replies[i], results[i], tries[i] = out.text, self.parse(out.text), attempt + 1
        verdicts = []
        for i, res in enumerate(results):
            if res is None:
                if cfg.on_unparseable == "raise":
                    raise BackendError(f"judge {self.spec}: could not parse the judge's reply after "
                                       f"{tries[i]} tries (item {i}): {replies[i][:300]!r}")
                res = Parsed(True, 0.0, "judge reply could not be parsed", {"unparsed": True})
            extra = {"tries": tries[i]} if tries[i] > 1 else {}
            if first[i].prompt_tokens is not None:
                extra["prompt_tokens"] = first[i].prompt_tokens
            verdicts.append(Verdict(refused=res.refused, score=res.score, explanation=res.explanation,
                                    judge=self.spec, details={**res.details, **extra, "reply": replies[i]}))
        unparsed = sum(1 for r in results if r is None)
        self.counts["judged"] += len(verdicts)
        self.counts["unparsed"] += unparsed
        if unparsed:
            log.warning("judge %s: %d of %d replies could not be parsed (flagged details['unparsed'])",
                        self.spec, unparsed, len(items))
        return verdicts


def _load_prompts(name: str, shipped: dict[str, Any], path: str | None) -> dict[str, Any]:
    if path is None:
        return shipped
    import yaml

    try:
        given = yaml.safe_load(Path(path).expanduser().read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise SpecError(f"judge {name!r}: prompts_file {path}: {e}") from None
    if not isinstance(given, dict) or not isinstance(given.get("model", {}), dict):
        raise SpecError(f"judge {name!r}: prompts_file {path}: expected a mapping of {', '.join(sorted(_ENTRY_KEYS))}"
                        f" (model: a mapping of {', '.join(sorted(_MODEL_KEYS))})")
    unknown = set(given) - _ENTRY_KEYS | set((given.get("model") or {})) - _MODEL_KEYS
    if unknown:
        raise SpecError(f"judge {name!r}: prompts_file {path}: unknown keys {', '.join(sorted(map(str, unknown)))}")
    return {**shipped, **given}


def _is_local_hf(model: Any) -> bool:
    from ..models._hf import HFChatModel

    return isinstance(model, HFChatModel)


def _is_openai(model: Any) -> bool:
    from ..models._openai import OpenAIChatModel

    return isinstance(model, OpenAIChatModel)


def _generate_local(model: Any, texts: list[str], gen: Any, *, add_special_tokens: bool) -> list[_Reply]:
    """Decode already-rendered prompts with a local transformers model (its tokenizer, its weights)."""
    import torch

    from ..models._hf import end_of_turn_ids

    tok, lm = model.tokenizer, model.model
    sampling = ({"temperature": None, "top_p": None, "top_k": None} if gen.greedy
                else {"temperature": gen.temperature, "top_p": gen.top_p, "top_k": None})
    out: list[_Reply] = []
    for start in range(0, len(texts), gen.batch_size):
        batch = texts[start:start + gen.batch_size]
        side, tok.padding_side = tok.padding_side, "left"
        try:
            enc = tok(batch, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens).to(model.device)
        finally:
            tok.padding_side = side
        if gen.seed is not None:
            torch.manual_seed(gen.seed + start)
        with torch.inference_mode():
            seqs = lm.generate(**enc, max_new_tokens=gen.max_new_tokens, do_sample=not gen.greedy,
                               eos_token_id=end_of_turn_ids(tok, lm), pad_token_id=tok.pad_token_id, **sampling)
        n = enc.input_ids.shape[1]
        out += [_Reply(tok.decode(seqs[b, n:], skip_special_tokens=True).strip(), int(enc.attention_mask[b].sum()))
                for b in range(len(batch))]
    return out
