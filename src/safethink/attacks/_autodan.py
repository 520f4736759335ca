"""AutoDAN (Liu et al. 2024) as published: a hierarchical genetic search over jailbreak prompts,
fitness = minus the loss of an affirmative target answer on a white-box model.

Two levels alternate (AutoDAN-HGA): every ``paragraph_every``-th generation, starting with the first,
is paragraph-level (elitism, roulette selection, multi-point crossover that swaps sentences between
the aligned paragraphs of two prompts, mutation); the others are sentence-level (every word is
scored by the mean fitness of the prompts that contain it, averaged with its previous score as
momentum, and non-elite prompts swap words for the substitutes that score best). The initial prompts
ship with the package (``data/autodan.yaml``); a file of one's own replaces them.
"""

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
from ..models._whitebox import WhiteBox
from ._base import ATTACKS, AttackBase, Built
from ._data import load_prompt_templates, package_data
from ._whitebox import DEFAULT_TARGET, record_target, resolve_white_box, target_losses

_SENT = re.compile(r"(?<=[.!?])\s+")
_PARA = re.compile(r"\n\s*\n")
_WORD = re.compile(r"[A-Za-z]+")
MODEL_SLOT = "[MODEL]"
"""Where a built-in prototype names the model; replaced by ``model_name`` (default "the assistant")."""


@ATTACKS.register()
@dataclass(kw_only=True)
class AutoDAN(AttackBase):
    name = "autodan"
    family = "optimisation"
    paper = "https://arxiv.org/abs/2310.04451"
    description = ("Hierarchical genetic search (AutoDAN-HGA): paragraph-level crossover between prompts and "
                   "momentum-guided word replacement, scored by target loss on a transformers model.")
    needs_target = True
    randomised = True
    prototypes: str | None = None
    """JSON file (or directory) of initial prompts; None uses the built-in ones (``data/autodan.yaml``)."""
    population_size: int = 16
    generations: int = 10
    elite_ratio: float = 0.1
    """Share of the best individuals copied unchanged into the next generation (at least one)."""
    crossover_rate: float = 0.5
    """Paragraph level: chance that two selected parents are crossed (else copied)."""
    crossover_points: int = 5
    """Paragraph level: at most this many cut points per aligned paragraph pair."""
    mutation_rate: float = 0.1
    """Per-child chance of a mutation (random substitutions from the word table)."""
    mutated_words: int = 3
    paragraph_every: int = 5
    """Generations 0, N, 2N... are paragraph-level, the others sentence-level (the paper's ``iter``)."""
    word_replace_rate: float = 0.5
    """Sentence level: chance that each replaceable word is swapped for a well-scored substitute."""
    max_word_replacements: int = 5
    """Sentence level: at most this many swaps per paragraph."""
    word_temperature: float = 0.1
    """Sentence level: softmax temperature over substitutes' scores (lower follows the scores more closely)."""
    target: str = DEFAULT_TARGET
    """Target when a record has none (records' own ``target`` wins)."""
    model_name: str | None = None
    """Replaces ``[MODEL]`` in the built-in prompts and model names that user prototypes mention
    ('ChatGPT', 'llama-2'); None keeps user prototypes' names and says "the assistant"."""
    eval_batch_size: int = 8
    surrogate: Any = None
    """Optimise on this transformers model (spec or ChatModel) instead of the target, then transfer."""
    _protos: list[str] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.population_size < 2 or self.generations < 0:
            raise SpecError("autodan: population_size must be >= 2 and generations >= 0")
        if self.paragraph_every < 1 or self.crossover_points < 1 or self.max_word_replacements < 0:
            raise SpecError("autodan: paragraph_every and crossover_points must be >= 1, max_word_replacements >= 0")
        if self.word_temperature <= 0:
            raise SpecError("autodan: word_temperature must be > 0")
        for k in ("elite_ratio", "crossover_rate", "mutation_rate", "word_replace_rate"):
            if not 0 <= getattr(self, k) <= 1:
                raise SpecError(f"autodan: {k} must be in [0, 1]")
        if self.prototypes is None:
            self._protos = list(package_data("autodan.yaml")["prototypes"])
        else:
            self._protos = list(load_prompt_templates(self.prototypes).values())

    def instantiate(self, individual: str, request: str) -> str:
        """The user message for one individual: the request placed at ``[PROMPT]`` or appended."""
        name = self.model_name or "the assistant"
        text = re.sub(r"(^|[.!?]\s+)" + re.escape(MODEL_SLOT), lambda m: m.group(1) + name[:1].upper() + name[1:],
                      individual)
        text = text.replace(MODEL_SLOT, name)
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

    def _evolve(self, hf: WhiteBox, request: str, target: str, rng: random.Random) -> tuple[str, dict]:
        table = package_data("autodan.yaml")["synonyms"]
        pop = [self._protos[i % len(self._protos)] for i in range(self.population_size)]
        pop = [p if i < len(self._protos) else mutate(p, table, self.mutated_words, rng) for i, p in enumerate(pop)]

        def fitness(inds: list[str]) -> list[float]:
            losses = target_losses(hf, [self.instantiate(p, request) for p in inds], target,
                                   batch_size=self.eval_batch_size)
            return [-x for x in losses]

        fit = fitness(pop)
        history = [max(fit)]
        n_elite = max(1, round(self.elite_ratio * self.population_size))
        n_children = self.population_size - n_elite
        word_scores: dict[str, float] = {}
        vocabulary = set(table) | {w.lower() for subs in table.values() for s in subs for w in _WORD.findall(s)}
        operators: list[str] = []
        counts = {"crossovers": 0, "word_replacements": 0, "mutations": 0}
        for gen in range(self.generations):
            order = sorted(range(len(pop)), key=lambda i: -fit[i])
            elites = [pop[i] for i in order[:n_elite]]
            if gen % self.paragraph_every == 0:
                operators.append("paragraph")
                children: list[str] = []
                while len(children) < n_children:
                    a, b = _roulette(pop, fit, rng), _roulette(pop, fit, rng)
                    if rng.random() < self.crossover_rate:
                        a, b = crossover(a, b, self.crossover_points, rng)
                        counts["crossovers"] += 1
                    children += [a, b]
                children = children[:n_children]
            else:
                operators.append("sentence")
                word_scores = momentum_word_scores(word_scores, pop, fit, vocabulary)
                children = []
                for i in order[n_elite:]:
                    child, n = replace_words(pop[i], word_scores, table, self.word_replace_rate,
                                             self.max_word_replacements, rng, temperature=self.word_temperature)
                    children.append(child)
                    counts["word_replacements"] += n
            for k, child in enumerate(children):
                if rng.random() < self.mutation_rate:
                    children[k] = mutate(child, table, self.mutated_words, rng)
                    counts["mutations"] += 1
            child_fit = fitness(children) if children else []
            pop = elites + children
            fit = [fit[i] for i in order[:n_elite]] + child_fit
            history.append(max(fit))
        i = max(range(len(pop)), key=lambda j: fit[j])
        top_words = sorted(word_scores.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        return pop[i], {"best_loss": -fit[i], "initial_loss": -history[0], "fitness_history": history,
                        "target": target, "generations": self.generations, "operators": operators, **counts,
                        "top_words": [[w, round(v, 6)] for w, v in top_words],
                        "prototypes": "builtin" if self.prototypes is None else str(self.prototypes)}


def mutate(text: str, table: dict[str, list[str]], n_words: int, rng: random.Random) -> str:
    """Swap up to ``n_words`` random table words for a random substitute (the offline mutation)."""
    spots = [m for m in _WORD.finditer(text) if m.group(0).lower() in table]
    if not spots:
        return text
    chosen = sorted(rng.sample(spots, min(n_words, len(spots))), key=lambda m: -m.start())
    for m in chosen:  # right to left, so earlier offsets stay valid
        text = text[:m.start()] + _cased(rng.choice(table[m.group(0).lower()]), m.group(0)) + text[m.end():]
    return text


def _cased(word: str, like: str) -> str:
    return word[0].upper() + word[1:] if like[0].isupper() else word


def _roulette(pop: list[str], fit: list[float], rng: random.Random) -> str:
    """Fitness-proportional choice via a softmax (fitness values are negative losses)."""
    top = max(fit)
    weights = [math.exp(f - top) for f in fit]
    return rng.choices(pop, weights=weights, k=1)[0]


def _sentences(paragraph: str) -> list[str]:
    return [s for s in _SENT.split(paragraph.strip()) if s]


def crossover(a: str, b: str, points: int, rng: random.Random) -> tuple[str, str]:
    """Paragraph-level crossover: the two prompts' paragraphs are aligned in order, and within each
    aligned pair the sentence sequences are cut at up to ``points`` shared places and the segments
    between cuts swapped at random (two children). A paragraph only one parent has goes with it."""
    pa, pb = _PARA.split(a.strip()), _PARA.split(b.strip())
    out_a, out_b = [], []
    for k in range(max(len(pa), len(pb))):
        if k >= len(pb):
            out_a.append(pa[k])
            continue
        if k >= len(pa):
            out_b.append(pb[k])
            continue
        sa, sb = _sentences(pa[k]), _sentences(pb[k])
        cuts = sorted(rng.sample(range(1, min(len(sa), len(sb))), min(points, min(len(sa), len(sb)) - 1)))
        na: list[str] = []
        nb: list[str] = []
        last = 0
        for cut in [*cuts, max(len(sa), len(sb))]:
            x, y = sa[last:cut], sb[last:cut]
            if rng.random() < 0.5:
                x, y = y, x
            na += x
            nb += y
            last = cut
        out_a.append(" ".join(na))
        out_b.append(" ".join(nb))
    return "\n\n".join(p for p in out_a if p), "\n\n".join(p for p in out_b if p)


def momentum_word_scores(previous: dict[str, float], pop: Sequence[str], fit: Sequence[float],
                         vocabulary: set[str] | None = None) -> dict[str, float]:
    """Each word's score: the mean fitness of the prompts that contain it, averaged with its previous
    score when it had one (the momentum of the AutoDAN paper). Words are compared in lower case;
    ``vocabulary`` limits scoring to the words replacement can choose between."""
    sums: dict[str, list[float]] = {}
    for text, f in zip(pop, fit):
        for w in sorted({m.group(0).lower() for m in _WORD.finditer(text)}):
            if vocabulary is not None and w not in vocabulary:
                continue
            sums.setdefault(w, []).append(f)
    scores = dict(previous)
    for w, fs in sums.items():
        mean = sum(fs) / len(fs)
        scores[w] = (previous[w] + mean) / 2 if w in previous else mean
    return scores


def _phrase_score(phrase: str, scores: dict[str, float], floor: float) -> float:
    words = [w.lower() for w in _WORD.findall(phrase)]
    return sum(scores.get(w, floor) for w in words) / len(words) if words else floor


def replace_words(text: str, scores: dict[str, float], table: dict[str, list[str]], rate: float,
                  max_per_paragraph: int, rng: random.Random, *, temperature: float = 0.1) -> tuple[str, int]:
    """Sentence-level step: each table word is, with chance ``rate``, replaced by one of its
    substitutes drawn by a softmax (``temperature``) over their momentum scores (unscored ones get the
    lowest score),
    at most ``max_per_paragraph`` swaps per paragraph. Returns the new text and the swap count."""
    floor = min(scores.values(), default=0.0)
    paragraphs = _PARA.split(text)
    seps = _PARA.findall(text)
    total = 0
    for k, para in enumerate(paragraphs):
        done = 0
        pieces: list[str] = []
        last = 0
        for m in _WORD.finditer(para):
            if done >= max_per_paragraph:
                break
            subs = table.get(m.group(0).lower())
            if not subs or rng.random() >= rate:
                continue
            weights = [_phrase_score(s, scores, floor) for s in subs]
            top = max(weights)
            pick = rng.choices(subs, weights=[math.exp((w - top) / temperature) for w in weights], k=1)[0]
            pieces += [para[last:m.start()], _cased(pick, m.group(0))]
            last = m.end()
            done += 1
        paragraphs[k] = "".join(pieces) + para[last:]
        total += done
    out = paragraphs[0]
    for sep, para in zip(seps, paragraphs[1:]):
        out += sep + para
    return out, total
