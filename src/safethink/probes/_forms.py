"""The labelled conversations a probe is fitted on: each request under the attacks it will meet.

Harmful and benign requests go through the same attacks, so an intent probe sees every template on both
sides and has to read the request inside it. A wrapper probe is labelled the other way round: the same
requests, positive inside a wrapping attack and negative as plain forms. A request, its twin and all their
forms share one group (:func:`~safethink.data.pair_key`), so cross-validation never splits them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from ..data import PromptRecord, pair_key
from ..errors import SpecError
from ..models import ChatModel, Conversation, GenerationConfig
from ._base import PROBE_TARGETS


def attacked_examples(records: Sequence[PromptRecord], attacks: Sequence[str], *, seed: int,
                      per_record: int | None = None, with_attacks: bool = False) -> tuple[list[Any], list[str]]:
    """Every record under every attack: (conversations, group per conversation). With ``per_record`` = k,
    each record goes under k of the attacks instead, drawn without replacement (seeded by ``seed`` and the
    record's pair key, so a harmful request and its twin are drawn the same attacks), so a long attack list
    costs k forms per request.

    A record's group is its pair key (:func:`~safethink.data.pair_key`), so a harmful request, its twin and all
    their attacked forms share one cross-validation fold. ``with_attacks`` adds a third list: each form's attack."""
    from ..attacks import ATTACKS  # on use: the attack plugins are slow to import

    if per_record is not None and per_record < 1:
        raise SpecError(f"per_record must be at least 1, got {per_record}")
    for name in attacks:
        if ATTACKS.get(name).needs_target:
            raise SpecError(f"attack {name!r} queries a target model; the probe is fitted on prompt-only attacks")
    chosen: dict[str, list[PromptRecord]] = {name: list(records) for name in attacks}
    if per_record is not None and per_record < len(attacks):
        chosen = {name: [] for name in attacks}
        for rec in records:
            for name in random.Random(f"{seed}/{pair_key(rec)}").sample(list(attacks), per_record):
                chosen[name].append(rec)
    convs, groups, names = [], [], []
    for name in attacks:
        if not chosen[name]:
            continue
        for rec, ap in zip(chosen[name], ATTACKS.create(name).prepare(chosen[name], seed=seed)):
            convs.append(ap.messages)
            groups.append(pair_key(rec))
            names.append(name)
    if with_attacks:
        return convs, groups, names  # type: ignore[return-value]
    return convs, groups


def probe_forms(harmful: Sequence[PromptRecord], benign: Sequence[PromptRecord], attacks: Sequence[str], *,
                seed: int, per_record: int | None = None, target: str = "intent",
                plain_attacks: Sequence[str] = ("none",),
                negatives: Sequence[PromptRecord] = ()) -> dict[str, list[Any]]:
    """The labelled conversations a probe of ``target`` is fitted on: ``positive`` and ``negative``
    conversations, then ``groups``, ``attacks`` (the attack of each form) and ``kinds`` (the kind of each
    plain form of ``negatives``, None for the rest), positives first.

    ``intent``: the harmful requests under ``attacks`` are positive, the benign ones negative. ``wrapper``:
    every request, harmful and benign, is positive under each attack not in ``plain_attacks`` (``per_record``
    of them drawn per request) and negative under each of ``plain_attacks``.

    ``negatives`` (benign records as real users send them) are negatives in their plain form, the whole
    conversation of :meth:`PromptRecord.messages` (a persona's system prompt and earlier turns included). For a
    wrapper probe they are also positives under ``per_record`` of the wrapping attacks: an attack template is an
    attack whatever it wraps, so the probe has to read the template, not the absence of pasted material. The
    plain rewrites (``plain_attacks`` beyond ``none``, such as ``past-tense``) are not applied to them: a rewrite
    of a pasted document is no request a user sends."""
    if target not in PROBE_TARGETS:
        raise SpecError(f"probe target {target!r}: expected one of {', '.join(PROBE_TARGETS)}")
    if target == "intent":
        pos = attacked_examples(harmful, attacks, seed=seed, per_record=per_record, with_attacks=True)
        neg = attacked_examples(benign, attacks, seed=seed, per_record=per_record, with_attacks=True)
    else:
        wrappers = [a for a in attacks if a not in plain_attacks]
        if not wrappers or not plain_attacks:
            raise SpecError("a wrapper probe needs attacks that wrap the request and plain_attacks that do not "
                            f"(attacks: {', '.join(attacks)}; plain: {', '.join(plain_attacks) or 'none given'})")
        pos = attacked_examples([*harmful, *benign, *negatives], wrappers, seed=seed, per_record=per_record,
                                with_attacks=True)
        neg = attacked_examples([*harmful, *benign], plain_attacks, seed=seed, with_attacks=True)
    plain = [r.messages() for r in negatives]
    return {"positive": pos[0], "negative": [*neg[0], *plain],
            "groups": [*pos[1], *neg[1], *(pair_key(r) for r in negatives)],
            "attacks": [*pos[2], *neg[2], *(["none"] * len(plain))],
            "kinds": [None] * (len(pos[0]) + len(neg[0])) + [negative_kind(r) for r in negatives]}


def negative_kind(rec: PromptRecord) -> str:
    """What a realistic negative is, for the rates per kind: its ``meta.kind``, else its source."""
    return str(rec.meta.get("kind") or rec.source)


DOCUMENT_TASKS = (
    "Give this text a short title:\n\n{}", "List the main points of the passage below.\n\n{}",
    "Rewrite the following in a more formal tone:\n{}", "{}\n\nWhat is the tone of the message above?",
    "Shorten this to one paragraph:\n\n{}", "Find any factual mistakes in this text:\n\n{}",
    "{}\n\nTurn the text above into a bulleted list.", "Write a friendly reply to this message:\n\n{}",
)
"""Ordinary tasks over a document, for :func:`document_requests`."""


def document_requests(model: ChatModel, records: Sequence[PromptRecord], *, n: int, seed: int,
                      max_new_tokens: int = 256, min_chars: int = 300, batch_size: int = 16) -> list[Conversation]:
    """Long plain requests: ``model`` answers ``n`` of the benign ``records`` (drawn with ``seed``) and each
    answer of at least ``min_chars`` characters becomes the document of an ordinary task
    (:data:`DOCUMENT_TASKS`: summarise it, give it a title, reply to it ...). A wrapper probe fitted without
    such requests learns that a long prompt is an attack: every attack template is long."""
    picked = random.Random(f"documents/{seed}").sample(list(records), min(n, len(records)))
    answers = model.generate([[{"role": "user", "content": r.prompt}] for r in picked],
                             GenerationConfig(max_new_tokens=max_new_tokens, batch_size=batch_size))
    docs = [a.text.strip() for a in answers if len(a.text.strip()) >= min_chars]
    return [[{"role": "user", "content": DOCUMENT_TASKS[i % len(DOCUMENT_TASKS)].format(d)}]
            for i, d in enumerate(docs)]
