"""``fit_probe``: the one call that fits a probe, from prompt sources or from conversations.

From sources, each request goes under a set of attacks first. Attacks are applied with their own seed
(``seed + 1`` by default), so a template instance drawn for evaluation under ``seed`` is not the one fitted on.
Extra benign *negatives* (``builtin:realistic-train``: requests with a pasted document, email, code or log, a
persona system prompt, earlier turns) teach either kind of probe that context is not a reason to flag: they
enter as the conversation their user sends (history included), and the threshold is held to a false-flag rate
on them out of fold (:func:`~safethink.probes.fit_probe_on_states`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..data import PromptRecord, load_prompts
from ..errors import SpecError
from ..models import ChatModel
from ._base import PROBE_TARGETS
from ._cv import fit_linear_probe
from ._forms import document_requests, probe_forms
from ._linear import RequestProbe
from ._tuned import TunedProbe, fit_tuned_probe


def fit_probe(model: ChatModel, harmful: Sequence[Any], benign: Sequence[Any], *,
              attacks: Sequence[str] = ("none",), seed: int = 0, attack_seed: int | None = None,
              limit: int | None = None, data_dir: str | None = None, tune: bool = False,
              forms_per_request: int | None = None, target: str = "intent",
              plain_attacks: Sequence[str] = ("none",), documents: int | None = None,
              document_tokens: int = 256, negatives: Sequence[str] = (),
              negatives_limit: int | None = None, max_negatives_fpr: float = 0.02,
              **fit_options: Any) -> RequestProbe | TunedProbe:
    """Fit a :class:`~safethink.probes.RequestProbe` on ``model`` (with ``tune``, a
    :class:`~safethink.probes.TunedProbe`) that scores p(``target``).

    ``harmful`` / ``benign`` are either prompt sources (names, paths, ``builtin:...``) or conversations
    (lists of ``{"role", "content"}`` messages), both of one kind. Sources are loaded and every request is put
    under every attack (with ``forms_per_request`` = k, under k of them drawn per request); conversations are
    fitted as given (give ``groups=``, one per conversation, to keep related ones in one fold), and the options
    below that build forms from sources are errors for them.

    ``fit_options`` go to :func:`~safethink.probes.fit_linear_probe` (``layers``, ``pool``, ``c``, ``max_fpr``
    ...), or with ``tune`` to :func:`~safethink.probes.fit_tuned_probe` (``layer``, ``epochs``, ``rank``,
    ``max_fpr`` ...).

    ``target="wrapper"`` fits an attack-wrapper probe instead: p(the request arrives inside an attack), whatever
    the request asks. Every request, harmful and benign, is a positive under each of ``attacks`` that is not in
    ``plain_attacks``, and a negative under each of ``plain_attacks`` (``none``, and rewrites that read like an
    ordinary request such as ``past-tense``), so the threshold (``max_fpr``) is set on plain requests.
    ``documents`` (default 200 for a wrapper probe) more negatives are long plain requests the model writes
    itself (:func:`~safethink.probes.document_requests`, answers of at most ``document_tokens``), so that length
    is not what the probe learns.

    ``negatives`` are sources of benign requests as real users send them (``builtin:realistic-train``; at most
    ``negatives_limit`` of each): negatives in their plain form, history included, and for a wrapper probe also
    positives under a wrapping attack (:func:`~safethink.probes.probe_forms`). The threshold then also keeps at
    most ``max_negatives_fpr`` of their plain forms flagged out of fold, with a request's group (``meta.group``:
    requests sharing pasted material) in one fold; ``metrics["negatives"]`` records the rate and which
    criterion set the threshold."""
    if target not in PROBE_TARGETS:
        raise SpecError(f"probe target {target!r}: expected one of {', '.join(PROBE_TARGETS)}")
    fit = fit_tuned_probe if tune else fit_linear_probe
    if _conversations(harmful) != _conversations(benign):
        raise SpecError("fit_probe: harmful and benign must be of one kind: both prompt sources (dataset names, "
                        "paths, builtin:...) or both conversations (lists of role/content messages)")
    if _conversations(harmful):
        for_sources = {"attacks": (attacks, ("none",)), "attack_seed": (attack_seed, None), "limit": (limit, None),
                       "data_dir": (data_dir, None), "forms_per_request": (forms_per_request, None),
                       "plain_attacks": (plain_attacks, ("none",)), "documents": (documents, None),
                       "document_tokens": (document_tokens, 256), "negatives": (negatives, ()),
                       "negatives_limit": (negatives_limit, None)}
        given = [k for k, (v, default) in for_sources.items()
                 if not (v == default or (isinstance(v, list) and tuple(v) == default))]
        if given:
            raise SpecError(f"fit_probe: {', '.join(given)} build forms from prompt sources; conversations are "
                            "fitted as given")
        probe = fit(model, list(harmful), list(benign), seed=seed, max_negatives_fpr=max_negatives_fpr,
                    **fit_options)
        probe.target = target
        return probe
    harmful, benign = _sources("harmful", harmful), _sources("benign", benign)
    negatives = _sources("negatives", negatives)

    def load(sources: Sequence[str], label: str) -> list[PromptRecord]:
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


def _conversations(items: Any) -> bool:
    """Whether ``items`` is a non-empty list of conversations (each a list of messages with a role)."""
    return (not isinstance(items, (str, os.PathLike)) and bool(items)
            and all(isinstance(c, (list, tuple)) and c and all(isinstance(m, dict) and "role" in m for m in c)
                    for c in items))


def _sources(what: str, sources: Any) -> list[str]:
    """Prompt sources as strings; anything else (one bare string, records, a mix) is an error that says so."""
    if isinstance(sources, (str, os.PathLike)) or not all(isinstance(s, (str, os.PathLike)) for s in sources):
        raise SpecError(f"fit_probe: {what} must be a list of prompt sources (dataset names, paths, builtin:...) "
                        "or, harmful and benign alike, a list of conversations (lists of role/content messages)")
    return [os.fspath(s) for s in sources]
