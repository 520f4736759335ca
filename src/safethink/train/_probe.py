"""Fit the probe guard's classifier from prompt sources, each request under a set of attacks.

Harmful and benign requests go through the same attacks, so the probe sees every template on both
sides and has to read the request inside it. Attacks are applied with their own seed (``seed + 1``
by default), so a template instance drawn for evaluation under ``seed`` is not the one fitted on.
A wrapper probe (``target="wrapper"``) is fitted the other way round: the same requests, labelled by
whether an attack wraps them.

Extra benign *negatives* (``builtin:realistic-train``: requests with a pasted document, email, code or log, a
persona system prompt, earlier turns) teach either probe that context is not a reason to flag: they enter as
the conversation their user sends (:meth:`PromptRecord.messages`, history included), and the threshold is
held to a false-flag rate on them out of fold (:func:`safethink.guard.fit_probe_on_states`).
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
                plain_attacks: Sequence[str] = ("none",), negatives: Sequence[Any] = ()) -> dict[str, list[Any]]:
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
        pos = attacked_examples([*harmful, *benign, *negatives], wrappers, seed=seed, per_record=per_record,
                                with_attacks=True)
        neg = attacked_examples([*harmful, *benign], plain_attacks, seed=seed, with_attacks=True)
    plain = [r.messages() for r in negatives]
    return {"positive": pos[0], "negative": [*neg[0], *plain],
            "groups": [*pos[1], *neg[1], *(pair_key(r) for r in negatives)],
            "attacks": [*pos[2], *neg[2], *(["none"] * len(plain))],
            "kinds": [None] * (len(pos[0]) + len(neg[0])) + [negative_kind(r) for r in negatives]}


def negative_kind(rec: Any) -> str:
    """What a realistic negative is, for the rates per kind: its ``meta.kind``, else its source."""
    return str(rec.meta.get("kind") or rec.source)


def pair_key(rec: Any) -> str:
    """The id a harmful request and its benign twin share: a twin's ``twin_of``, else the group of requests
    that share pasted material (``meta.group``, as in ``builtin:realistic``), else the request's own id as its
    file wrote it (``harmful_train/harmful-044`` is ``harmful-044`` there; ``twin_of`` names that)."""
    if rec.meta.get("twin_of"):
        return str(rec.meta["twin_of"])
    if rec.meta.get("group"):
        return f"group:{rec.meta['group']}"
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
                           document_tokens: int = 256, negatives: Sequence[str] = (),
                           negatives_limit: int | None = None, max_negatives_fpr: float = 0.02,
                           **fit_options: Any) -> Any:
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
    probe learns.

    ``negatives`` are sources of benign requests as real users send them (``builtin:realistic-train``; at most
    ``negatives_limit`` of each): negatives in their plain form, history included, and for a wrapper probe also
    positives under a wrapping attack (:func:`probe_forms`). The threshold then also keeps at most
    ``max_negatives_fpr`` of their plain forms flagged out of fold, with a request's group (``meta.group``:
    requests sharing pasted material) in one fold; ``metrics["negatives"]`` records the rate and which
    criterion set the threshold."""
    from ..data import load_prompts
    from ..guard import fit_probe, fit_tuned_probe

    def load(sources: Sequence[str], label: str) -> list[Any]:
        out = []
        for s in sources:
            out += load_prompts(s, label=label, limit=limit, seed=seed, data_dir=data_dir)  # type: ignore[arg-type]
        return out

    h, b = load(harmful, "harmful"), load(benign, "benign")
    extra = [r for s in negatives
             for r in load_prompts(s, label="benign", limit=negatives_limit, seed=seed, data_dir=data_dir)]
    aseed = seed + 1 if attack_seed is None else attack_seed
    forms = probe_forms(h, b, attacks, seed=aseed, per_record=forms_per_request, target=target,
                        plain_attacks=plain_attacks, negatives=extra)
    hc, bc, groups, kinds = forms["positive"], forms["negative"], forms["groups"], forms["kinds"]
    if documents is not None and target != "wrapper":
        raise SpecError("documents are negatives of a wrapper probe; an intent probe takes its benign sources")
    n_docs = 200 if documents is None and target == "wrapper" else documents or 0
    n_forms = len(bc)
    if n_docs:
        docs = document_requests(model, b, n=n_docs, seed=seed, max_new_tokens=document_tokens)
        bc, groups = [*bc, *docs], [*groups, *(f"document/{i}" for i in range(len(docs)))]
        kinds = [*kinds, *([None] * len(docs))]
    fit = fit_tuned_probe if tune else fit_probe
    probe = fit(model, hc, bc, groups=groups, seed=seed, negative_kinds=kinds if extra else None,
                max_negatives_fpr=max_negatives_fpr, **fit_options)
    probe.target = target
    probe.metrics["fitted_on"] = {"harmful": list(harmful), "benign": list(benign), "attacks": list(attacks),
                                  "attack_seed": aseed, "harmful_requests": len(h), "benign_requests": len(b),
                                  "forms_per_request": forms_per_request, "forms": len(hc) + len(bc),
                                  "target": target, "negatives": list(negatives), "negatives_limit": negatives_limit,
                                  "negative_requests": len(extra), "max_negatives_fpr": max_negatives_fpr,
                                  **({"plain_attacks": list(plain_attacks), "documents": len(bc) - n_forms,
                                      "documents_asked": n_docs, "document_tokens": document_tokens}
                                     if target == "wrapper" else {})}
    return probe


def flag_rates(model: Any, probes: Sequence[Any], *, harmful: Sequence[str] = (), benign: Sequence[str] = (),
               attacks: Sequence[str] = ("none",), threshold: float | None = None, limit: int | None = None,
               seed: int = 0, data_dir: str | None = None, batch_size: int = 16) -> list[dict[str, Any]]:
    """The share of each prompt source that each of ``probes`` flags under ``model``, measured before anything
    is generated (a probe acts on the prompt alone), so a whole set takes seconds to minutes. The hidden states
    are computed once for all linear probes.

    Each ``harmful`` source is sent under every one of ``attacks`` (templates drawn with ``seed``, as an
    evaluation with that seed draws them), each ``benign`` source as an evaluation sends it: verbatim, its
    history first. ``threshold`` overrides the probes' own; ``limit`` samples each source. One row per (source,
    attack): ``source``, ``label``, ``attack``, ``n``, and per probe (``probes``, in order) ``flagged``, ``rate``,
    ``threshold`` and, for sources whose records have a ``meta.kind``, ``by_kind`` (``n``, ``flagged``,
    ``rate``)."""
    from ..attacks import ATTACKS
    from ..data import load_prompts

    for name in attacks:
        if ATTACKS.get(name).needs_target:
            raise SpecError(f"attack {name!r} queries a target model; flag rates are measured on prompt-only attacks")
    for p in probes:
        why = p.mismatch(model)
        if why:
            raise SpecError(why)
    plan: list[tuple[str, str, str, list[Any], list[Any]]] = []
    for label, sources, names in (("harmful", harmful, list(attacks)), ("benign", benign, ["none"])):
        for src in sources:
            recs = load_prompts(src, label=label, limit=limit, seed=seed, data_dir=data_dir)  # type: ignore[arg-type]
            for name in names:
                convs = [ap.messages for ap in ATTACKS.create(name).prepare(recs, seed=seed)]
                plan.append((src, label, name, recs, convs))
    scores = _probe_scores(model, probes, [c for *_, convs in plan for c in convs], batch_size=batch_size)
    rows, at = [], 0
    for src, label, name, recs, convs in plan:
        row: dict[str, Any] = {"source": src, "label": label, "attack": name, "n": len(convs), "probes": []}
        for p, ps in zip(probes, scores):
            cut = p.threshold if threshold is None else threshold
            flagged = [s >= cut for s in ps[at:at + len(convs)]]
            by_kind: dict[str, dict[str, Any]] = {}
            for rec, f in zip(recs, flagged):
                if rec.meta.get("kind"):
                    k = by_kind.setdefault(str(rec.meta["kind"]), {"n": 0, "flagged": 0})
                    k["n"], k["flagged"] = k["n"] + 1, k["flagged"] + int(f)
            for k in by_kind.values():
                k["rate"] = k["flagged"] / k["n"]
            row["probes"].append({"flagged": sum(flagged), "rate": sum(flagged) / len(convs), "threshold": cut,
                                  **({"by_kind": dict(sorted(by_kind.items()))} if by_kind else {})})
        at += len(convs)
        rows.append(row)
    return rows


def _probe_scores(model: Any, probes: Sequence[Any], conversations: Sequence[Any], *,
                  batch_size: int) -> list[list[float]]:
    """Each probe's scores of ``conversations``; linear probes of one pooling share one pass over the model."""
    from ..guard import RequestProbe, prompt_states

    out: dict[int, list[float]] = {}
    linear = [(i, p) for i, p in enumerate(probes) if isinstance(p, RequestProbe)]
    for pool in sorted({p.pool for _, p in linear}):
        same = [(i, p) for i, p in linear if p.pool == pool]
        layers = sorted({k for _, p in same for k in p.layers})
        states = prompt_states(model, conversations, layers=layers, pool=pool, batch_size=batch_size)
        for i, p in same:
            out[i] = [float(x) for x in p.probabilities(states[:, [layers.index(k) for k in p.layers]])]
    for i, p in enumerate(probes):
        if i not in out:
            out[i] = p.score(model, conversations, batch_size=batch_size)
    return [out[i] for i in range(len(probes))]
