"""Greedy answers shared by every defence that sends the model the same input.

Many rows of an evaluation ask one model the same thing: a guard that lets a request through (a probe,
a filter) asks exactly what the undefended model was asked; a decode-time guard (``r2d-pivot``) watches
the very answer the adapter alone gives. Greedy decoding makes those answers one answer, so the runner
generates it once and keeps it in the results store, keyed by everything that decides it: the model
(spec, adapter content, load options), the conversation, the prefilled prefix and the decoding settings.

A hook (a decode-time guard) is shown a stored answer token by token, as it would be live, and the answer
is cut where the hook halts it (:func:`~safethink.models._replay.replay_hook`). An answer a hook halted
live is not stored: it is not the whole answer. Sampled decoding and log-probability requests are never
cached, and only backends whose greedy answer is a function of their input say so
(``greedy_is_deterministic``: the transformers backend; not a scripted mock that answers in order).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any

from ..models import Completion, Conversation, GenerationConfig, TokenEvent, TokenHook
from ..models._replay import cut_completion, replay_hook
from ._spec import canonical_json
from ._store import ResultStore


class SharedAnswers:
    """A model whose greedy answers are looked up in the store before any is generated.

    Everything but ``generate`` passes through to the wrapped model (white-box guards and attacks read
    its network and tokenizer)."""

    def __init__(self, model: Any, store: ResultStore, identity: Any):
        self._model, self._store = model, store
        self._identity = canonical_json(identity)
        self.spec = model.spec
        self.hits = 0
        """Answers taken from the store (for progress displays and tests)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def answer_key(self, conversation: Conversation, prefix: str, config: GenerationConfig) -> str:
        settings = {k: v for k, v in asdict(config).items() if k not in ("batch_size", "seed")}
        ident = canonical_json([self._identity, conversation, prefix, settings])
        return hashlib.sha256(ident.encode("utf-8")).hexdigest()

    def generate(self, conversations: Sequence[Conversation], config: GenerationConfig = GenerationConfig(), *,
                 prefixes: Sequence[str] | None = None, hook: TokenHook | None = None,
                 progress: Any = None) -> list[Completion]:
        convs = list(conversations)
        if not getattr(self._model, "greedy_is_deterministic", False):
            return self._model.generate(convs, config, prefixes=prefixes, hook=hook, progress=progress)
        replayable = hook is None or (getattr(self._model, "tokenizer", None) is not None
                                      and getattr(self._model, "_eos_ids", None) is not None)
        if not config.greedy or config.logprobs or not replayable:
            return self._model.generate(convs, config, prefixes=prefixes, hook=hook, progress=progress)
        pre = [prefixes[i] if prefixes else "" for i in range(len(convs))]
        keys = [self.answer_key(c, p, config) for c, p in zip(convs, pre)]
        stored = self._store.answers(keys)
        results: list[Completion | None] = [None] * len(convs)
        for i, k in enumerate(keys):
            if k in stored:
                results[i] = self._replayed(Completion(**stored[k]), i, hook, bool(pre[i]))
        if progress and len(stored):
            progress(sum(r is not None for r in results))
        self.hits += sum(r is not None for r in results)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            def sub_hook(e: TokenEvent) -> bool:  # rows as the caller numbered them
                return hook(replace(e, row=missing[e.row]))

            fresh = self._model.generate([convs[i] for i in missing], config,
                                         prefixes=[pre[i] for i in missing] if prefixes else None,
                                         hook=sub_hook if hook is not None else None, progress=progress)
            new = []
            for i, out in zip(missing, fresh):
                results[i] = out
                if out.finish_reason != "hook":  # a halted answer is not the model's whole answer
                    new.append((keys[i], asdict(out)))
            self._store.add_answers(new)
        return [r for r in results if r is not None]

    def _replayed(self, out: Completion, row: int, hook: TokenHook | None, prefixed: bool) -> Completion:
        if hook is None or not out.token_ids:
            return out
        tok = self._model.tokenizer
        piece = getattr(self._model, "_piece", None) or (lambda t: tok.decode([t], skip_special_tokens=False))
        cut = replay_hook(hook, row, out.token_ids, self._model._eos_ids, piece)
        return out if cut is None else cut_completion(tok, out, cut, prefixed=prefixed)
