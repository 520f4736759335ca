"""Published input-filter defences as guards: SmoothLLM, the perplexity filter, erase-and-check."""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

from ..errors import SafethinkError, SpecError
from ..models import ChatModel, Conversation, GenerationConfig, ProgressFn
from ._base import GUARDS, GuardedOutput
from ._core import GuardBase, GuardKind, last_user, looks_like_refusal, passthrough, positive, refusal, run_stage, text, with_last_user


@dataclass(frozen=True)
class _JudgeItem:
    """Shaped like ``safethink.judges.JudgeInput`` so a judge object can be used without the
    guard layer importing the judges layer (which sits beside it, not below it)."""

    prompt: str
    response: str
    sent_prompt: str | None = None


def perturb(s: str, kind: str, rate: float, rng: random.Random) -> str:
    """SmoothLLM's character perturbations: ``swap`` / ``insert`` random characters at ``rate``
    of the positions, or overwrite one contiguous ``patch`` of that length."""
    alphabet = string.printable
    n = len(s)
    k = max(1, int(round(rate * n))) if n else 0
    if k == 0:
        return s
    chars = list(s)
    if kind == "swap":
        for i in rng.sample(range(n), min(k, n)):
            chars[i] = rng.choice(alphabet)
    elif kind == "insert":
        for i in sorted(rng.sample(range(n + 1), min(k, n + 1)), reverse=True):
            chars.insert(i, rng.choice(alphabet))
    else:  # patch
        start = rng.randrange(0, n - min(k, n) + 1)
        chars[start:start + k] = [rng.choice(alphabet) for _ in range(min(k, n - start))]
    return "".join(chars)


@GUARDS.register()
@dataclass
class SmoothLLM(GuardBase):
    """SmoothLLM (Robey et al. 2023): answer ``copies`` randomly perturbed copies of the request,
    vote on whether they were jailbroken, and return an answer that agrees with the majority.

    Refusal is decided by ``judge`` (any object with ``judge(items) -> [verdict with .refused]``),
    else ``refusal_check(prompt, answer) -> bool``, else the guard's keyword check.
    """

    name: ClassVar[str] = "smoothllm"
    kind: ClassVar[GuardKind] = "filter"
    paper: ClassVar[str] = "https://arxiv.org/abs/2310.03684"

    copies: int = 10
    """Perturbed copies per request (the paper uses 2-20)."""
    rate: float = 0.10
    """Share of characters perturbed (q in the paper)."""
    perturbation: Literal["swap", "insert", "patch"] = "swap"
    seed: int = 0
    """Seeds the perturbations and the choice among majority answers."""
    judge: Any = None
    """Optional judge object (duck-typed on ``.judge(items)``)."""
    refusal_check: Callable[[str, str], bool] | None = None
    """Optional ``(prompt, answer) -> refused``; used when no judge is given."""

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self.name, copies=self.copies)
        if not 0 < self.rate <= 1:
            raise SpecError(f"guard 'smoothllm': rate must be in (0, 1], got {self.rate}")

    def _refused(self, prompts: list[str], answers: list[str]) -> list[bool]:
        if self.judge is not None:
            verdicts = self.judge.judge([_JudgeItem(p, a) for p, a in zip(prompts, answers)])
            return [bool(v.refused) for v in verdicts]
        if self.refusal_check is not None:
            return [bool(self.refusal_check(p, a)) for p, a in zip(prompts, answers)]
        return [looks_like_refusal(a) for a in answers]

    def generate(self, model: ChatModel, conversations: Sequence[Conversation], config: GenerationConfig,
                 *, progress: ProgressFn | None = None) -> list[GuardedOutput]:
        rng = random.Random(self.seed)
        copies = [with_last_user(c, perturb(last_user(c), self.perturbation, self.rate, rng))
                  for c in conversations for _ in range(self.copies)]
        comps = run_stage(model, copies, config)
        refused = self._refused([last_user(c) for c in conversations for _ in range(self.copies)],
                                [c.text for c in comps])
        outs = []
        for i in range(len(conversations)):
            block = slice(i * self.copies, (i + 1) * self.copies)
            votes = refused[block]
            jailbroken = sum(not r for r in votes) > len(votes) / 2
            agreeing = [c for c, r in zip(comps[block], votes) if r != jailbroken]
            pick = rng.choice(agreeing)
            outs.append(passthrough(pick, action=None if jailbroken else "refused",
                                    votes_refused=sum(votes), copies=self.copies))
            if progress:
                progress(1)
        return outs


def _hf_parts(model: ChatModel, guard: str) -> tuple[Any, Any]:
    net, tok = getattr(model, "model", None), getattr(model, "tokenizer", None)
    if net is None or tok is None:
        raise SafethinkError(f"guard {guard!r} scores prompts with the model's own weights; it needs a "
                             f"local transformers model (smollm2-135m, hf:...), not {model.spec}")
    return net, tok


def log_perplexities(model: ChatModel, prompts: Sequence[str], *, window: int | None = None,
                     batch_size: int = 16) -> list[float]:
    """Mean token negative log-likelihood of each prompt under the model (its log-perplexity);
    with ``window``, the maximum over sliding windows of that many tokens (Jain et al.'s
    windowed filter, which catches a short gibberish suffix inside a long prompt)."""
    import torch

    net, tok = _hf_parts(model, "perplexity")
    out: list[float] = []
    device = next(net.parameters()).device
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start:start + batch_size])
        tok.padding_side = "right"
        enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=True).to(device)
        with torch.inference_mode():
            logits = net(**enc).logits[:, :-1].float()
        targets = enc.input_ids[:, 1:]
        mask = enc.attention_mask[:, 1:].bool()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        for b in range(len(chunk)):
            row = nll[b][mask[b]]
            if row.numel() == 0:
                out.append(0.0)
            elif window and row.numel() > window:
                out.append(float(row.unfold(0, window, 1).mean(dim=1).max()))
            else:
                out.append(float(row.mean()))
    return out


@GUARDS.register()
@dataclass
class PerplexityFilter(GuardBase):
    """Perplexity filter (Jain et al. 2023): block a request whose log-perplexity under the model
    itself is above ``threshold``. Calibrated as in the paper: the threshold is the highest
    log-perplexity seen on a set of real requests, so none of those would be blocked."""

    name: ClassVar[str] = "perplexity"
    kind: ClassVar[GuardKind] = "filter"
    paper: ClassVar[str] = "https://arxiv.org/abs/2309.00614"

    threshold: float | None = None
    """Log-perplexity above which a request is blocked; None = calibrate on first use."""
    window: int | None = None
    """Score the worst window of this many tokens instead of the whole prompt."""
    calibration_prompts: list[str] | None = None
    """Requests to calibrate on (default: the built-in harmful seed prompts)."""
    margin: float = 0.0
    """Added to the calibrated maximum (slack for prompts unlike the calibration set)."""
    message: str | None = None
    """Refusal text for blocked requests; default from prompts.yaml."""

    def calibrate(self, model: ChatModel, prompts: Sequence[str] | None = None) -> float:
        """Set and return ``threshold`` = max log-perplexity over ``prompts`` + ``margin``."""
        prompts = list(prompts or self.calibration_prompts or _builtin_harmful())
        if not prompts:
            raise SpecError("guard 'perplexity': no calibration prompts")
        self.threshold = max(log_perplexities(model, prompts, window=self.window)) + self.margin
        return self.threshold

    def generate(self, model: ChatModel, conversations: Sequence[Conversation], config: GenerationConfig,
                 *, progress: ProgressFn | None = None) -> list[GuardedOutput]:
        if self.threshold is None:
            self.calibrate(model)
        assert self.threshold is not None
        scores = log_perplexities(model, [last_user(c) for c in conversations], window=self.window,
                                  batch_size=config.batch_size)
        passed = [i for i, s in enumerate(scores) if s <= self.threshold]
        comps = dict(zip(passed, run_stage(model, [conversations[i] for i in passed], config, progress=progress)))
        msg = self.message or text("refusal", "default")
        outs = []
        for i, s in enumerate(scores):
            info = {"log_perplexity": s, "threshold": self.threshold}
            outs.append(passthrough(comps[i], **info) if i in comps else refusal(msg, action="blocked", **info))
        return outs


def _builtin_harmful() -> list[str]:
    try:
        from ..data import load_prompts  # type: ignore[attr-defined]

        return [r.prompt for r in load_prompts("builtin:harmful")]
    except (ImportError, SafethinkError) as e:
        raise SpecError("guard 'perplexity': give threshold= or calibration_prompts= "
                        f"(the built-in harmful seed prompts are not available: {e})") from None


@GUARDS.register()
@dataclass
class EraseAndCheck(GuardBase):
    """Erase-and-check (Kumar et al. 2023), suffix mode: erase 0..``max_erase`` tokens from the
    end of the request and block it when the safety classifier flags any of the versions.

    ``classifier(prompts) -> [harmful]``; by default the guarded model is asked (prompts.yaml).
    """

    name: ClassVar[str] = "erase-check"
    kind: ClassVar[GuardKind] = "filter"
    paper: ClassVar[str] = "https://arxiv.org/abs/2309.02705"

    mode: Literal["suffix"] = "suffix"
    """Only suffix erasure is implemented (the cheap mode; insertion/infusion grow combinatorially)."""
    max_erase: int = 20
    """Most tokens erased (d in the paper)."""
    classifier: Callable[[list[str]], list[bool]] | None = None
    """Safety classifier; True = harmful."""
    classifier_prompt: str | None = None
    """Instruction for the default classifier with ``{prompt}``; default from prompts.yaml."""
    message: str | None = None
    """Refusal text for blocked requests; default from prompts.yaml."""

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self.name, max_erase=self.max_erase)

    def erased_versions(self, model: ChatModel, prompt: str) -> list[str]:
        tok = getattr(model, "tokenizer", None)
        if tok is not None:
            ids = tok(prompt, add_special_tokens=False).input_ids
            return [tok.decode(ids[:len(ids) - k]) for k in range(min(self.max_erase, len(ids) - 1) + 1)]
        words = prompt.split()  # text-only backends: erase whitespace-separated words
        return [" ".join(words[:len(words) - k]) for k in range(min(self.max_erase, len(words) - 1) + 1)]

    def _classify(self, model: ChatModel, prompts: list[str], config: GenerationConfig) -> list[bool]:
        if self.classifier is not None:
            return [bool(x) for x in self.classifier(prompts)]
        ask = self.classifier_prompt or text("erase_check", "classifier")
        convs = [[{"role": "user", "content": ask.format(prompt=p)}] for p in prompts]
        cfg = replace(config, max_new_tokens=4, temperature=0.0)
        return [c.text.strip().lower().startswith("yes") for c in run_stage(model, convs, cfg)]

    def generate(self, model: ChatModel, conversations: Sequence[Conversation], config: GenerationConfig,
                 *, progress: ProgressFn | None = None) -> list[GuardedOutput]:
        versions = [self.erased_versions(model, last_user(c)) for c in conversations]
        flat = [v for vs in versions for v in vs]
        flags = self._classify(model, flat, config)
        harmful, k = [], 0
        for vs in versions:
            hits = flags[k:k + len(vs)]
            harmful.append(next((j for j, h in enumerate(hits) if h), None))
            k += len(vs)
        passed = [i for i, h in enumerate(harmful) if h is None]
        comps = dict(zip(passed, run_stage(model, [conversations[i] for i in passed], config, progress=progress)))
        msg = self.message or text("refusal", "default")
        return [passthrough(comps[i], checked=len(versions[i])) if i in comps
                else refusal(msg, action="blocked", erased_tokens=harmful[i], checked=len(versions[i]))
                for i in range(len(conversations))]

