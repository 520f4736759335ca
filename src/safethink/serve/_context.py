"""The model's context length, and how many tokens a request's prompt takes in it.

Both are read from the model itself: the length from its config (``max_position_embeddings`` and
kin), else the tokenizer's ``model_max_length`` when that is a real number, else llama.cpp's
``n_ctx()`` or vLLM's ``max_model_len``. A model that exposes neither (an HTTP backend, ``mock:``) gets no context check here;
its own server or script decides.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

from ..models import ChatModel, Conversation, render_chat

_CONFIG_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")
_NO_LIMIT = 10**8
"""A tokenizer's ``model_max_length`` at or above this is transformers' "unknown" sentinel (1e30)."""


def context_length(model: ChatModel) -> int | None:
    """Tokens the model can attend to (prompt and completion together); None when it cannot be read."""
    config = getattr(getattr(model, "model", None), "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config()
    for name in _CONFIG_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    limit = getattr(getattr(model, "tokenizer", None), "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _NO_LIMIT:
        return limit
    llm = getattr(model, "llm", None)
    n_ctx = getattr(llm, "n_ctx", None)
    if callable(n_ctx):
        try:
            return int(n_ctx())
        except (TypeError, ValueError):
            return None
    value = getattr(getattr(getattr(llm, "llm_engine", None), "model_config", None), "max_model_len", None)
    return value if isinstance(value, int) and value > 0 else None


class PromptCounter:
    """Counts the tokens of a conversation rendered as the model renders it (``render_chat`` with the
    generation prompt). It uses a private copy of the tokenizer: the batcher's worker thread uses the
    model's own, and a transformers tokenizer must not be used from two threads at once."""

    def __init__(self, tokenizer: Any):
        self._tokenizer = copy.deepcopy(tokenizer)
        self._lock = threading.Lock()

    def __call__(self, conversation: Conversation) -> int:
        with self._lock:
            text = render_chat(self._tokenizer, conversation, add_generation_prompt=True)
            return len(self._tokenizer(text, add_special_tokens=False).input_ids)


def prompt_counter(model: ChatModel) -> PromptCounter | None:
    """A counter for a model with a transformers tokenizer; None for one without."""
    tok = getattr(model, "tokenizer", None)
    if tok is None or not callable(tok) or not hasattr(tok, "apply_chat_template"):
        return None
    return PromptCounter(tok)
