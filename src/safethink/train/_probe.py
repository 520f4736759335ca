"""Fit the probe guard's classifier from prompt sources, each request under a set of attacks.

Harmful and benign requests go through the same attacks, so the probe sees every template on both
sides and has to read the request inside it. Attacks are applied with their own seed (``seed + 1``
by default), so a template instance drawn for evaluation under ``seed`` is not the one fitted on.
A wrapper probe (``target="wrapper"``) is fitted the other way round: the same requests, labelled by
whether an attack wraps them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import SpecError


def attacked_examples(records: Sequence[Any], attacks: Sequence[str], *, seed: int,
                      per_record: int | None = None, with_attacks: bool = False) -> tuple[list[Any], list[str]]:
    """Every record under every attack: (conversations, group per conversation). With ``per_record`` = k,
    each record goes under k of the attacks instead, drawn without replacement (seeded by ``seed`` and the
    record's pair key, so a harmful request and its twin are drawn the same attacks), so a long attack list
    costs k forms per request.

    A record's group is its pair key (:func:`pair_key`), so a harmful request, its twin and all their
    attacked forms share one cross-validation fold. ``with_attacks`` adds a third list: each form's attack."""
    import random

    from ..attacks import ATTACKS

    if per_record is not None and per_record < 1:
        raise SpecError(f"per_record must be at least 1, got {per_record}")
    for name in attacks:
        if ATTACKS.get(name).needs_target:
            raise SpecError(f"attack {name!r} queries a target model; the probe is fitted on prompt-only attacks")
    chosen: dict[str, list[Any]] = {name: list(records) for name in attacks}
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


def probe_forms(harmful: Sequence[Any], benign: Sequence[Any], attacks: Sequence[str], *, seed: int,
                per_record: int | None = None, target: str = "intent",
                plain_attacks: Sequence[str] = ("none",)) -> dict[str, list[Any]]:
    """The labelled conversations a probe of ``target`` is fitted on: ``positive`` and ``negative``
    conversations, then ``groups`` and ``attacks`` (the attack of each form), positives first.

    ``intent``: the harmful requests under ``attacks`` are positive, the benign ones negative. ``wrapper``:
    every request, harmful and benign, is positive under each attack not in ``plain_attacks`` (``per_record``
    of them drawn per request) and negative under each of ``plain_attacks``."""
    from ..guard import PROBE_TARGETS

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
        pos = attacked_examples([*harmful, *benign], wrappers, seed=seed, per_record=per_record, with_attacks=True)
        neg = attacked_examples([*harmful, *benign], plain_attacks, seed=seed, with_attacks=True)
    return {"positive": pos[0], "negative": neg[0], "groups": [*pos[1], *neg[1]], "attacks": [*pos[2], *neg[2]]}


def pair_key(rec: Any) -> str:
    """The id a harmful request and its benign twin share: a twin's ``twin_of``, else the request's own id
    as its file wrote it (``harmful_train/harmful-044`` is ``harmful-044`` there; ``twin_of`` names that)."""
    if rec.meta.get("twin_of"):
        return str(rec.meta["twin_of"])
    if rec.meta.get("seed_id"):
        return str(rec.meta["seed_id"])
    prefix = f"{rec.source}/"
    return rec.id[len(prefix):] if rec.id.startswith(prefix) else rec.id


DOCUMENT_TASKS = (
    "Give this text a short title:\n\n{}", "List the main points of the passage below.\n\n{}",
    "Rewrite the following in a more formal tone:\n{}", "{}\n\nWhat is the tone of the message above?",
    "Shorten this to one paragraph:\n\n{}", "Find any factual mistakes in this text:\n\n{}",
    "{}\n\nTurn the text above into a bulleted list.", "Write a friendly reply to this message:\n\n{}",
)
"""Ordinary tasks over a document, for :func:`document_requests`."""


def document_requests(model: Any, records: Sequence[Any], *, n: int, seed: int, max_new_tokens: int = 256,
                      min_chars: int = 300, batch_size: int = 16) -> list[Any]:
    """Long plain requests: ``model`` answers ``n`` of the benign ``records`` (drawn with ``seed``) and each
    answer of at least ``min_chars`` characters becomes the document of an ordinary task
    (:data:`DOCUMENT_TASKS`: summarise it, give it a title, reply to it ...). A wrapper probe fitted without
    such requests learns that a long prompt is an attack: every attack template is long."""
    import random

    from ..models import GenerationConfig

    picked = random.Random(f"documents/{seed}").sample(list(records), min(n, len(records)))
    answers = model.generate([[{"role": "user", "content": r.prompt}] for r in picked],
                             GenerationConfig(max_new_tokens=max_new_tokens, batch_size=batch_size))
    docs = [a.text.strip() for a in answers if len(a.text.strip()) >= min_chars]
    return [[{"role": "user", "content": DOCUMENT_TASKS[i % len(DOCUMENT_TASKS)].format(d)}]
            for i, d in enumerate(docs)]


def fit_probe_from_sources(model: Any, harmful: Sequence[str], benign: Sequence[str], *,
                           attacks: Sequence[str] = ("none",), seed: int = 0, attack_seed: int | None = None,
                           limit: int | None = None, data_dir: str | None = None, tune: bool = False,
                           forms_per_request: int | None = None, target: str = "intent",
                           plain_attacks: Sequence[str] = ("none",), documents: int | None = None,
                           document_tokens: int = 256, **fit_options: Any) -> Any:
    """Load ``harmful`` / ``benign`` prompt sources (names, paths, ``builtin:...``), put every request
    under every attack (with ``forms_per_request`` = k, under k of them drawn per request) and fit a
    :class:`~safethink.guard.RequestProbe` on ``model`` (with ``tune``, a :class:`~safethink.guard.TunedProbe`).

    ``fit_options`` go to :func:`safethink.guard.fit_probe` (``layers``, ``pool``, ``c``, ``max_fpr`` ...),
    or with ``tune`` to :func:`safethink.guard.fit_tuned_probe` (``layer``, ``epochs``, ``rank``, ``max_fpr`` ...).

    ``target="wrapper"`` fits an attack-wrapper probe instead: p(the request arrives inside an attack), whatever
    the request asks. Every request, harmful and benign, is a positive under each of ``attacks`` that is not in
    ``plain_attacks``, and a negative under each of ``plain_attacks`` (``none``, and rewrites that read like an
    ordinary request such as ``past-tense``), so the threshold (``max_fpr``) is set on plain requests.
    ``documents`` (default 200 for a wrapper probe) more negatives are long plain requests the model writes
    itself (:func:`document_requests`, answers of at most ``document_tokens``), so that length is not what the
    probe learns."""
    from ..data import load_prompts
    from ..guard import fit_probe, fit_tuned_probe

    def load(sources: Sequence[str], label: str) -> list[Any]:
        out = []
        for s in sources:
            out += load_prompts(s, label=label, limit=limit, seed=seed, data_dir=data_dir)  # type: ignore[arg-type]
        return out

    h, b = load(harmful, "harmful"), load(benign, "benign")
    aseed = seed + 1 if attack_seed is None else attack_seed
    forms = probe_forms(h, b, attacks, seed=aseed, per_record=forms_per_request, target=target,
                        plain_attacks=plain_attacks)
    hc, bc, groups = forms["positive"], forms["negative"], forms["groups"]
    if documents is not None and target != "wrapper":
        raise SpecError("documents are negatives of a wrapper probe; an intent probe takes its benign sources")
    n_docs = 200 if documents is None and target == "wrapper" else documents or 0
    if n_docs:
        docs = document_requests(model, b, n=n_docs, seed=seed, max_new_tokens=document_tokens)
        bc, groups = [*bc, *docs], [*groups, *(f"document/{i}" for i in range(len(docs)))]
    fit = fit_tuned_probe if tune else fit_probe
    probe = fit(model, hc, bc, groups=groups, seed=seed, **fit_options)
    probe.target = target
    probe.metrics["fitted_on"] = {"harmful": list(harmful), "benign": list(benign), "attacks": list(attacks),
                                  "attack_seed": aseed, "harmful_requests": len(h), "benign_requests": len(b),
                                  "forms_per_request": forms_per_request, "forms": len(hc) + len(bc),
                                  "target": target,
                                  **({"plain_attacks": list(plain_attacks), "documents": len(bc) - len(forms["negative"]),
                                      "documents_asked": n_docs, "document_tokens": document_tokens}
                                     if target == "wrapper" else {})}
    return probe
