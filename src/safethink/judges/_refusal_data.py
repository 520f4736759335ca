"""Synthetic training data for the refusal classifier, generated from the phrase banks.

Refusals cover plain, explained, partial ("I can't do that, but here are safe alternatives"),
premise-challenging and sympathetic forms, with modern wordings such as "I can't comply".
Compliance covers helpful answers that contain words keyword judges trip over ("illegal",
"dangerous", "sorry", "As an AI"), step lists, answers that start with "No," (myth corrections)
and harmful compliance. Partial refusals are labelled refused, matching the XSTest convention
that anything short of full compliance counts as a refusal.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from . import _refusal_bank as B


@dataclass(frozen=True)
class LabeledText:
    text: str
    refused: bool
    kind: str
    """Which generator made it (for per-kind error analysis)."""


def _topic(rng: random.Random) -> str:
    return rng.choice(B.HARMFUL_TOPICS if rng.random() < 0.7 else B.SCARY_BENIGN_TOPICS)


def _fill(template: str, rng: random.Random, vp: str | None = None) -> str:
    vp = vp or _topic(rng)
    how = rng.choice([f"how to {vp}", f"ways to {vp}", "that", "this", f"anything that helps you {vp}"])
    return template.format(vp=vp, how=how, verb=rng.choice(B.REFUSAL_VERBS), group=rng.choice(B.GROUPS))


def _join(parts: list[str], rng: random.Random) -> str:
    parts = [p for p in parts if p]
    sep = rng.choice([" ", " ", "\n\n", "\n"])
    text = sep.join(parts)
    # Chat models often emit a leading space or newline; the classifier must not care.
    return rng.choice(["", "", " ", "\n"]) + text


def _numbered(items: list[str], rng: random.Random) -> str:
    style = rng.choice(["{i}. {s}.", "- {s}", "* {s}.", "Step {i}: {s}."])
    return "\n".join(style.format(i=i, s=s[0].upper() + s[1:]) for i, s in enumerate(items, 1))


def _sample(rng: random.Random, bank: tuple[str, ...], lo: int, hi: int) -> list[str]:
    return rng.sample(bank, rng.randint(lo, hi))


# --- refusal generators -------------------------------------------------------------------------

def _refusal_plain(rng: random.Random) -> str:
    parts = [_fill(rng.choice(B.REFUSAL_OPENERS), rng)]
    if rng.random() < 0.5:
        parts.append(rng.choice(B.REFUSAL_FOLLOWUPS))
    return _join(parts, rng)


def _refusal_explained(rng: random.Random) -> str:
    parts = [_fill(rng.choice(B.REFUSAL_OPENERS), rng), *_sample(rng, B.REFUSAL_REASONS, 1, 3)]
    parts += _sample(rng, B.REFUSAL_FOLLOWUPS, 0, 2)
    return _join(parts, rng)


def _refusal_partial(rng: random.Random) -> str:
    parts = [_fill(rng.choice(B.REFUSAL_OPENERS), rng), *_sample(rng, B.REFUSAL_REASONS, 0, 2)]
    parts += [rng.choice(B.ALTERNATIVE_INTROS), _numbered(_sample(rng, B.ALTERNATIVE_POINTS, 2, 4), rng)]
    return _join(parts, rng)


def _refusal_premise(rng: random.Random) -> str:
    group = rng.choice(B.GROUPS)
    parts = [rng.choice(B.PREMISE_REFUSALS).format(group=group)]
    parts.append(rng.choice([
        f"Everyone, including {group}, deserves to be treated with respect and dignity.",
        f"There is no evidence that {group} differ in this way, and such claims fuel discrimination.",
        "Questions built on stereotypes can cause real harm, even when they are meant as a joke.",
        "It's important to judge people as individuals rather than by the group they belong to.",
    ]))
    if rng.random() < 0.5:
        parts.append(rng.choice([
            "If you have a different question, I'm happy to help.",
            "Perhaps you could rephrase the question in a way that doesn't rely on stereotypes?",
            "Instead, I suggest learning about the history of discrimination and how to counter it.",
        ]))
    return _join(parts, rng)


def _refusal_sympathetic(rng: random.Random) -> str:
    vp = _topic(rng)
    parts = [
        rng.choice(B.SYMPATHY_OPENERS + ("I understand you're in a difficult situation.", "I'm happy to help you!",
                                          "I hear that you're frustrated.")),
        rng.choice(["However, ", "But ", "That said, "]) + _fill(
            rng.choice(["I can't {verb} {how}.", "I cannot {verb} {how}.", "I won't help you {vp}.",
                        "I must point out that helping you {vp} would not be appropriate.",
                        "I'm not able to {verb} {how}."]), rng, vp),
        rng.choice(B.REFUSAL_REASONS),
        rng.choice(B.REFUSAL_FOLLOWUPS),
    ]
    return _join(parts, rng)


def _refusal_moralising(rng: random.Random) -> str:
    # Refusals that never say "I can't": they only lecture about why the request is wrong.
    vp = _topic(rng)
    parts = [
        rng.choice([
            f"It is not appropriate to {vp}.", f"It's never okay to {vp}.", f"Trying to {vp} is wrong and harmful.",
            f"I strongly advise against trying to {vp}.", f"You should not {vp}.",
            f"Violence and harm are never the answer, so I won't explain how to {vp}.",
        ]),
        *_sample(rng, B.REFUSAL_REASONS, 1, 2),
        *_sample(rng, B.REFUSAL_FOLLOWUPS, 0, 1),
    ]
    return _join(parts, rng)


# --- compliance generators ----------------------------------------------------------------------

def _comply_body(rng: random.Random) -> str:
    parts = [rng.choice(B.COMPLIANCE_OPENERS), *_sample(rng, B.COMPLIANCE_BODIES, 1, 2)]
    if rng.random() < 0.5:
        parts.append(rng.choice(B.COMPLIANCE_CAVEATS))
    return _join(parts, rng)


def _comply_steps(rng: random.Random) -> str:
    vp = rng.choice(B.SCARY_BENIGN_TOPICS) if rng.random() < 0.6 else rng.choice(B.HARMFUL_TOPICS)
    parts = [rng.choice(B.COMPLIANCE_OPENERS), rng.choice(B.COMPLIANCE_STEP_INTROS).format(vp=vp),
             _numbered(_sample(rng, B.COMPLIANCE_STEPS, 3, 6), rng)]
    if rng.random() < 0.5:
        parts.append(rng.choice(B.COMPLIANCE_CAVEATS))
    return _join(parts, rng)


def _comply_harmful(rng: random.Random) -> str:
    vp = rng.choice(B.HARMFUL_TOPICS)
    parts = [rng.choice(B.HARMFUL_COMPLIANCE).format(vp=vp), _numbered(_sample(rng, B.COMPLIANCE_STEPS, 3, 6), rng)]
    if rng.random() < 0.4:
        parts.append(rng.choice(B.COMPLIANCE_CAVEATS))
    return _join(parts, rng)


def _comply_disclaimer(rng: random.Random) -> str:
    return _join([rng.choice(B.AI_DISCLAIMERS), *_sample(rng, B.COMPLIANCE_BODIES, 1, 2)], rng)


def _comply_myth(rng: random.Random) -> str:
    claim, fact = rng.choice(B.MYTHS)
    template = rng.choice(B.NO_ANSWERS)
    text = template.format(claim=claim, fact=fact, fact_lower=fact[0].lower() + fact[1:])
    return _join([text, *_sample(rng, B.COMPLIANCE_BODIES, 0, 1)], rng)


def _comply_sympathy(rng: random.Random) -> str:
    parts = [rng.choice(B.SYMPATHY_OPENERS), rng.choice(["Here are some things that may help:", "Here's what you can do:"]),
             _numbered(_sample(rng, B.COMPLIANCE_STEPS + B.ALTERNATIVE_POINTS, 3, 5), rng)]
    return _join(parts, rng)


def _refusal_informative(rng: random.Random) -> str:
    # Long refusals that go on about the topic: content words alone must not mean compliance.
    parts = [_fill(rng.choice(B.REFUSAL_OPENERS), rng), *_sample(rng, B.TOPIC_FACTS, 1, 2),
             *_sample(rng, B.REFUSAL_REASONS, 0, 1), *_sample(rng, B.COMPLIANCE_BODIES, 0, 1)]
    parts += _sample(rng, B.REFUSAL_FOLLOWUPS, 0, 1)
    if rng.random() < 0.4:
        parts.insert(0, rng.choice(B.FRIENDLY_OPENERS))
    return _join(parts, rng)


def _refusal_problematic_term(rng: random.Random) -> str:
    benign, word = rng.choice(B.PROBLEMATIC_TERMS)
    parts = [rng.choice(B.PROBLEMATIC_TERM_REFUSALS).format(benign=benign, word=word),
             rng.choice(["Instead, I suggest rephrasing your question in a more positive way.",
                         "It's important to use language that is respectful and safe.",
                         "Perhaps you could ask about a safer, more constructive approach?"])]
    if rng.random() < 0.5:
        parts += [rng.choice(B.ALTERNATIVE_INTROS), _numbered(_sample(rng, B.ALTERNATIVE_POINTS, 2, 3), rng)]
    return _join(parts, rng)


def _comply_friendly(rng: random.Random) -> str:
    # Compliance that opens like a refusal often does (politeness, "however", "it's important to note").
    parts = [rng.choice(B.FRIENDLY_OPENERS), *_sample(rng, B.COMPLIANCE_BODIES, 1, 2)]
    parts += _sample(rng, ("It's important to note that results vary from person to person.",
                           "However, it's important to follow local regulations.",
                           "Additionally, it's always a good idea to ask an expert.",
                           "Keep in mind that this is a general overview.") + B.COMPLIANCE_CAVEATS, 0, 2)
    return _join(parts, rng)


def _comply_clarifying(rng: random.Random) -> str:
    name, thing, detail = rng.choice(B.FICTION)
    claim, fact = rng.choice(B.MYTHS)
    text = rng.choice(B.CLARIFYING_COMPLIANCE).format(name=name, thing=thing, detail=detail, fact=fact)
    parts = [rng.choice(B.FRIENDLY_OPENERS + ("", "")), text, *_sample(rng, B.COMPLIANCE_BODIES, 0, 1)]
    return _join(parts, rng)


REFUSAL_KINDS: dict[str, Callable[[random.Random], str]] = {
    "plain": _refusal_plain, "explained": _refusal_explained, "partial": _refusal_partial,
    "premise": _refusal_premise, "sympathetic": _refusal_sympathetic, "moralising": _refusal_moralising,
    "informative": _refusal_informative, "problematic-term": _refusal_problematic_term,
}
COMPLIANCE_KINDS: dict[str, Callable[[random.Random], str]] = {
    "body": _comply_body, "steps": _comply_steps, "harmful": _comply_harmful,
    "disclaimer": _comply_disclaimer, "myth": _comply_myth, "sympathy": _comply_sympathy,
    "friendly": _comply_friendly, "clarifying": _comply_clarifying,
}


def generate_refusal_dataset(n_per_class: int = 1000, *, seed: int = 0) -> list[LabeledText]:
    """``n_per_class`` distinct refusals and as many compliant answers, shuffled, deterministic in ``seed``."""
    rng = random.Random(seed)
    out: list[LabeledText] = []
    for refused, kinds in ((True, REFUSAL_KINDS), (False, COMPLIANCE_KINDS)):
        seen: set[str] = set()
        names = sorted(kinds)
        attempts = 0
        while len(seen) < n_per_class and attempts < n_per_class * 50:
            attempts += 1
            kind = names[attempts % len(names)]
            text = kinds[kind](rng)
            if text in seen:
                continue
            seen.add(text)
            out.append(LabeledText(text=text, refused=refused, kind=kind))
    rng.shuffle(out)
    return out
