"""Stopping the generation of requests nobody waits for any more (timed out, or the client left).

The batcher hands the guard a :class:`StoppableModel` instead of the model. Every ``generate`` call
through it carries a token hook that, at the next decoding step, halts

- every row, once no request of the batch is wanted any more: the backend returns at once (the
  transformers backend checks its hook as a stopping criterion after every token), and the proxy
  raises :class:`GenerationCancelled` so the guard starts no further stage (a rollback, a re-check);
- the rows of one stopped request, where its row can be told apart: the guard passed that request's
  own conversation object on (``none``, ``r2d``, ``r2d-pivot``, ``scot``...). A guard that rewrites
  conversations (prompt defences) keeps decoding a stopped request's row until its batch ends.

The hook is asked before the guard's own hook and never raises inside a backend's decoding loop
(the backends run threads and event loops of their own); it only halts rows. Backends whose hooks run
after generation (``hook_mode = "post-hoc"``: vLLM) get no extra hook and stop between stages only.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from ..models import ChatModel, Completion, Conversation, GenerationConfig, ProgressFn, TokenEvent, TokenHook


class GenerationCancelled(RuntimeError):
    """Every request of the batch was stopped (timed out or its client left) before it finished."""


class StoppableModel:
    """``model`` as the guard sees it while the batcher runs a batch; other attributes pass through.

    ``conversations[i]`` is the conversation of the request whose stop flag is ``stops[i]``.
    """

    def __init__(self, model: ChatModel, conversations: Sequence[Conversation], stops: Sequence[threading.Event]):
        if len(conversations) != len(stops):
            raise ValueError("one stop flag per conversation")
        self._model = model
        self._stops = list(stops)
        self._owner = {id(c): (c, s) for c, s in zip(conversations, stops)}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def all_stopped(self) -> bool:
        return all(s.is_set() for s in self._stops)

    def _check(self) -> None:
        if self.all_stopped():
            raise GenerationCancelled("every request of this batch was stopped")

    def _flag(self, conversation: Conversation) -> threading.Event | None:
        owner = self._owner.get(id(conversation))
        return owner[1] if owner is not None and owner[0] is conversation else None

    def stop_hook(self, conversations: Sequence[Conversation], inner: TokenHook | None) -> TokenHook:
        """A hook that halts stopped rows (all rows once every request stopped), then asks ``inner``."""
        rows = [self._flag(c) for c in conversations]

        def hook(event: TokenEvent) -> bool:
            flag = rows[event.row] if 0 <= event.row < len(rows) else None
            if (flag is not None and flag.is_set()) or self.all_stopped():
                return True
            return bool(inner(event)) if inner is not None else False

        return hook

    def generate(
        self,
        conversations: Sequence[Conversation],
        config: GenerationConfig = GenerationConfig(),
        *,
        prefixes: Sequence[str] | None = None,
        hook: TokenHook | None = None,
        progress: ProgressFn | None = None,
    ) -> list[Completion]:
        self._check()
        if getattr(self._model, "hook_mode", "live") != "post-hoc":
            hook = self.stop_hook(conversations, hook)
        out = self._model.generate(conversations, config, prefixes=prefixes, hook=hook, progress=progress)
        self._check()
        return out

    def close(self) -> None:  # the server owns the model's lifetime
        pass
