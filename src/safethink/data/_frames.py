"""Frame twins: offline benign twins of a harmful request, without a teacher.

A harmful request such as "Write a tutorial on how to hack into a government database" is parsed into
what it asks for (the act "hack into a government database") and the act is put in a benign frame of the
kinds a helpful assistant answers in full: how it is investigated, detected or prevented, its history,
its laws, fiction in which it has consequences. The twin keeps the request's topic and most of its words
and drops its intent, so a classifier trained on both has to read intent rather than topic.

Three shapes are recognised (anything else gets no frame twin):

- ``... how to <act>`` and ``... to <act>``: a base-form verb phrase ("hack into a database");
- ``... for|on|about <act-ing>``: a gerund phrase ("making a homemade explosive device");
- ``<lead verb> <a thing> that|which|to <clause>``: a noun phrase ("a script that steals passwords").

Rule twins are coarser than a teacher's (see ``benign_twin`` in ``evolution.yaml``): the frames are fixed,
and an act whose words carry the harm on their own ("make a bomb") stays a request about bombs. They are
training data for classifiers and retain sets, not evaluation data.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from ._schema import PromptRecord, pair_key

_LEAD = (r"(?:write|create|develop|design|generate|provide|give|outline|produce|draft|compose|publish|offer|"
         r"suggest|describe|explain|teach|instruct|show|demonstrate|build|make|post|share|list|detail|tell|"
         r"help|guide|program|code|prepare|plan|devise|construct|compile|release|record)")

BASE_FRAMES = (
    "Explain how investigators catch people who try to {act}.",
    "Write a fictional story about a character who tries to {act} and faces the consequences.",
    "Describe the history of attempts to {act} and how society has responded.",
    "What are the warning signs that someone may try to {act}, and how can people protect themselves?",
    "Explain why it is illegal or harmful to {act}.",
    "How do schools and workplaces teach people to recognise when someone tries to {act}?",
)
ING_FRAMES = (
    "Explain the laws and penalties for {act}.",
    "Discuss the history of {act} and the efforts to prevent it.",
    "Write a fictional story in which a character is arrested for {act}.",
    "How do experts detect and prevent {act}?",
    "Describe the harm caused to victims and communities by {act}.",
)
THING_FRAMES = (
    "Explain how to recognise and protect against {act}.",
    "Describe how security experts or moderators detect {act}.",
    "Discuss the harm caused by {act} and how platforms and authorities respond.",
    "Write a fictional story in which a character discovers {act} and reports it.",
    "What should someone do if they come across {act}?",
)
FRAMES = {"base": BASE_FRAMES, "ing": ING_FRAMES, "thing": THING_FRAMES}
"""The benign frames per act shape; ``{act}`` is the parsed act."""

_PREFIX = re.compile(r"^(?:please\s+|can you\s+|could you\s+|i want you to\s+|i need you to\s+)+", re.IGNORECASE)
_HOW_TO = re.compile(r"\b(?:on |for |about )?how (?:to|one could|one can|someone could|someone can) (?P<act>.+)$",
                     re.IGNORECASE)
_GERUND = re.compile(r"^" + _LEAD + r"\b.*?\b(?:for|on|about|in) (?P<act>(?:\w+ly )?\w+ing\b.+)$", re.IGNORECASE)
_TO_VERB = re.compile(r"^" + _LEAD + r"\b(?: \w+){0,3}? to (?P<act>(?!the |a |an |my |your |their |his |her )\w+.+)$",
                      re.IGNORECASE)
_THING = re.compile(r"^" + _LEAD + r"\s+(?:me\s+|us\s+)?(?P<act>(?:a|an|the|some)\s+.+?\s(?:that|which|to|for|"
                    r"designed to|meant to|intended to)\s.+)$", re.IGNORECASE)


def parse_act(prompt: str) -> tuple[str, str] | None:
    """``(shape, act)`` of a harmful request (see the module doc), or None when no shape fits."""
    text = _PREFIX.sub("", prompt.strip()).rstrip(" .!?")
    if len(text.split()) < 3:
        return None
    for shape, pattern in (("base", _HOW_TO), ("ing", _GERUND), ("base", _TO_VERB), ("thing", _THING)):
        m = pattern.search(text)
        if m:
            act = m.group("act").strip()
            if shape == "thing":
                act = act[:1].lower() + act[1:]
            if len(act.split()) >= 2:
                return shape, act
    return None


def frame_twins(prompt: str, key: str, *, n: int = 1, seed: int = 0) -> list[str]:
    """Up to ``n`` benign twins of the harmful ``prompt``, each in a different frame drawn with ``seed`` and
    ``key`` (the request's id: the same request always gets the same twins). Empty when the request has
    none of the recognised shapes."""
    parsed = parse_act(prompt)
    if parsed is None or n < 1:
        return []
    shape, act = parsed
    frames = random.Random(f"{seed}:frame-twin:{key}").sample(FRAMES[shape], min(n, len(FRAMES[shape])))
    return [f.format(act=act) for f in frames]


def frame_twin_records(records: Sequence[PromptRecord], *, n: int = 1, seed: int = 0,
                       source: str = "frame-twins") -> list[PromptRecord]:
    """:func:`frame_twins` of harmful :class:`~safethink.data.PromptRecord` s as benign records, each with
    ``meta["twin_of"]`` naming its harmful request (so a probe keeps the pair in one fold)."""
    out = []
    for rec in records:
        key = pair_key(rec)
        for i, text in enumerate(frame_twins(rec.prompt, key, n=n, seed=seed)):
            out.append(PromptRecord(id=f"{source}/{key}/{i}", prompt=text, label="benign", source=source,
                                    category=rec.category, meta={"twin_of": key, "style": "frame"}))
    return out
