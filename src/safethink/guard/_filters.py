"""Published input-filter defences as guards: SmoothLLM, the perplexity filter, erase-and-check
(suffix, insertion and infusion modes)."""

from __future__ import annotations

import itertools
import math
import random
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

from ..errors import SafethinkError, SpecError
from ..models import ChatModel, Conversation, GenerationConfig, ProgressFn
from ..models._whitebox import white_box
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


def log_perplexities(model: ChatModel, prompts: Sequence[str], *, window: int | None = None,
                     batch_size: int = 16) -> list[float]:
    """Mean token negative log-likelihood of each prompt under the model (its log-perplexity);
    with ``window``, the maximum over sliding windows of that many tokens (Jain et al.'s
    windowed filter, which catches a short gibberish suffix inside a long prompt)."""
    wb = white_box(model, "guard 'perplexity' (it scores prompts with the model's own weights)")
    out: list[float] = []
    for lp in wb.token_logprobs(list(prompts), add_special_tokens=True, batch_size=batch_size):
        nll = -lp
        if nll.numel() == 0:
            out.append(0.0)
        elif window and nll.numel() > window:
            out.append(float(nll.unfold(0, window, 1).mean(dim=1).max()))
        else:
            out.append(float(nll.mean()))
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


EraseMode = Literal["suffix", "insertion", "infusion"]


def erased_subsequences(n: int, mode: EraseMode, max_erase: int, blocks: int = 1) -> list[tuple[int, ...]]:
    """The token positions kept in every version of an ``n``-token prompt that erase-and-check
    classifies, the full prompt first (Kumar et al. 2023, section 3-5). ``d = max_erase``:

    * ``suffix``: erase the last ``1..d`` tokens; ``d + 1`` versions.
    * ``insertion``: erase up to ``blocks`` contiguous runs of ``1..d`` tokens each, anywhere;
      about ``(n * d) ** blocks`` versions.
    * ``infusion``: erase every set of ``1..d`` tokens, contiguous or not; ``sum_{i<=d} C(n, i)``.

    A version never erases every token (an empty request says nothing). Versions that keep the
    same positions are listed once (two adjacent insertion runs equal one longer run).
    """
    if n <= 0:
        return [()]
    d = min(max_erase, n - 1)
    full = tuple(range(n))
    if mode == "suffix":
        return [full[:n - k] for k in range(d + 1)]
    if mode == "infusion":
        return [tuple(i for i in full if i not in gone) for k in range(d + 1)
                for gone in map(frozenset, itertools.combinations(full, k))]
    runs = [frozenset(range(s, s + k)) for k in range(1, d + 1) for s in range(n - k + 1)]
    seen: dict[frozenset[int], None] = {frozenset(): None}
    frontier = [frozenset()]
    for _ in range(blocks):  # one more erased run on top of each version of the previous round
        nxt = []
        for erased in frontier:
            for run in runs:
                gone = erased | run
                if gone not in seen and len(gone) < n:
                    seen[gone] = None
                    nxt.append(gone)
        frontier = nxt
    return [tuple(i for i in full if i not in gone) for gone in seen]


def erase_check_cost(n: int, mode: EraseMode, max_erase: int, blocks: int = 1) -> int:
    """How many safety-filter calls erase-and-check makes on an ``n``-token prompt (the full prompt
    included). Exact for ``suffix`` and ``infusion``; counts the distinct versions for ``insertion``."""
    d = min(max_erase, max(n - 1, 0))
    if mode == "suffix":
        return d + 1
    if mode == "infusion":
        return sum(math.comb(n, k) for k in range(d + 1))
    return len(erased_subsequences(n, mode, max_erase, blocks))


@GUARDS.register()
@dataclass
class EraseAndCheck(GuardBase):
    """Erase-and-check (Kumar et al. 2023): classify the request and versions of it with tokens
    erased, and block it when the safety filter flags any version. Certified: if the filter flags
    a harmful prompt ``P``, it also flags ``P`` with up to ``max_erase`` adversarial tokens added as
    a suffix (``suffix``), inserted in up to ``blocks`` contiguous runs (``insertion``) or spread
    anywhere (``infusion``), because one of the erased versions is ``P`` itself.

    ``classifier(prompts) -> [harmful]``; by default the guarded model is asked (prompts.yaml).
    Cost per request, ``n`` tokens, ``d = max_erase`` (see :func:`erase_check_cost`): suffix
    ``d + 1`` filter calls, insertion about ``(n d) ** blocks``, infusion ``sum_{i<=d} C(n, i)``
    (n = 40, d = 3: 4, 118 and 10,701).
    """

    name: ClassVar[str] = "erase-check"
    kind: ClassVar[GuardKind] = "filter"
    paper: ClassVar[str] = "https://arxiv.org/abs/2309.02705"

    mode: EraseMode = "suffix"
    """Which adversarial placement is certified: ``suffix``, ``insertion`` or ``infusion``."""
    max_erase: int = 20
    """Most tokens erased (d in the paper): the certified adversarial length (per run, for insertion)."""
    blocks: int = 1
    """Insertion mode: how many separate inserted runs are certified (k in the paper)."""
    max_checks: int = 20_000
    """Refuse to run (SafethinkError) when one request would need more filter calls than this,
    rather than silently checking fewer versions than the certificate needs."""
    classifier: Callable[[list[str]], list[bool]] | None = None
    """Safety classifier; True = harmful."""
    classifier_prompt: str | None = None
    """Instruction for the default classifier with ``{prompt}``; default from prompts.yaml."""
    message: str | None = None
    """Refusal text for blocked requests; default from prompts.yaml."""

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self.name, max_erase=self.max_erase, blocks=self.blocks, max_checks=self.max_checks)
        if self.blocks > 1 and self.mode != "insertion":
            raise SpecError(f"guard 'erase-check': blocks={self.blocks} applies to mode 'insertion' only")

    def _units(self, model: ChatModel, prompt: str) -> tuple[list[Any], Callable[[list[Any]], str]]:
        tok = getattr(model, "tokenizer", None)
        if tok is not None:
            return list(tok(prompt, add_special_tokens=False).input_ids), tok.decode
        return prompt.split(), " ".join  # text-only backends: erase whitespace-separated words

    def erased_versions(self, model: ChatModel, prompt: str) -> list[str]:
        """The full request, then every erased version, as text."""
        return [v for v, _ in self._versions(model, prompt)]

    def _versions(self, model: ChatModel, prompt: str) -> list[tuple[str, int]]:
        """(text, tokens erased) for every version checked."""
        units, join = self._units(model, prompt)
        cost = erase_check_cost(len(units), self.mode, self.max_erase, self.blocks)
        if cost > self.max_checks:
            raise SafethinkError(
                f"guard 'erase-check': mode {self.mode!r} with max_erase={self.max_erase} needs {cost} safety-filter "
                f"calls on a {len(units)}-token request (max_checks={self.max_checks}); lower max_erase, use "
                "mode 'suffix', or raise max_checks")
        return [(join([units[i] for i in kept]), len(units) - len(kept))
                for kept in erased_subsequences(len(units), self.mode, self.max_erase, self.blocks)]

    def _classify(self, model: ChatModel, prompts: list[str], config: GenerationConfig) -> list[bool]:
        if self.classifier is not None:
            return [bool(x) for x in self.classifier(prompts)]
        ask = self.classifier_prompt or text("erase_check", "classifier")
        convs = [[{"role": "user", "content": ask.format(prompt=p)}] for p in prompts]
        cfg = replace(config, max_new_tokens=4, temperature=0.0)
        return [c.text.strip().lower().startswith("yes") for c in run_stage(model, convs, cfg)]

    def generate(self, model: ChatModel, conversations: Sequence[Conversation], config: GenerationConfig,
                 *, progress: ProgressFn | None = None) -> list[GuardedOutput]:
        versions = [self._versions(model, last_user(c)) for c in conversations]
        # different erasures can decode to the same text (repeated tokens): classify each text once
        unique = list(dict.fromkeys(v for vs in versions for v, _ in vs))
        flag = dict(zip(unique, self._classify(model, unique, config)))
        hits = [next(((v, e) for v, e in vs if flag[v]), None) for vs in versions]
        passed = [i for i, h in enumerate(hits) if h is None]
        comps = dict(zip(passed, run_stage(model, [conversations[i] for i in passed], config, progress=progress)))
        msg = self.message or text("refusal", "default")
        outs = []
        for i, vs in enumerate(versions):
            info = {"mode": self.mode, "checked": len(vs)}
            hit = hits[i]
            outs.append(passthrough(comps[i], **info) if hit is None else
                        refusal(msg, action="blocked", erased_tokens=hit[1], flagged_version=hit[0], **info))
        return outs
