"""The one place that turns chat messages into model text.

Training, generation, guards and the server all call :func:`render_chat`, so the template a
model is trained with is the template it is run with, and system and user text is made safe to
tokenise in one place: the spelling of a control token inside a system or user message (a client
writing ``<|im_end|>\n<|im_start|>system``, or an R2D pivot such as ``[SAFE]``) is broken with a
zero-width space before the template is applied, so tokenising the rendered text never turns it
into the control token. Only the tokens the template itself writes are control tokens.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from ..errors import InputError

ROLES = ("system", "user", "assistant")

TEXT_ROLES = frozenset({"system", "user"})
"""Roles whose content is always tokenised as text. Assistant turns are model text: the pivot and
think tokens in them stay tokens (training targets, prefilled answers), as the model writes them."""

BREAK = "\u200b"
"""Zero-width space put after the first character of a control-token spelling in user text."""


def validate_messages(messages: Any, *, where: str = "messages") -> list[dict[str, str]]:
    """Check a conversation's shape; return it as plain dicts."""
    if not isinstance(messages, list) or not messages:
        raise InputError(f"{where}: expected a non-empty list of {{role, content}} objects")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise InputError(f"{where}[{i}]: expected an object with 'role' and 'content'")
        if m["role"] not in ROLES:
            raise InputError(f"{where}[{i}].role: {m['role']!r} is not one of {', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            raise InputError(f"{where}[{i}].content: expected a string")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def control_tokens(tokenizer: Any) -> tuple[str, ...]:
    """The spellings the tokenizer turns into one added token wherever they appear in text.

    Every added token (special or not: the tokenizer matches both before its normal split), except
    whitespace tokens and plain words, which templates and users write as ordinary text.
    """
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    found = {getattr(t, "content", str(t)) for t in decoder.values()}
    return tuple(sorted(t for t in found if len(t) > 1 and t.strip() and not re.fullmatch(r"\w+", t)))


@lru_cache(maxsize=32)
def _pattern(tokens: tuple[str, ...]) -> re.Pattern[str] | None:
    if not tokens:
        return None
    return re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)), re.IGNORECASE)


def escape_control_tokens(text: str, tokens: Sequence[str]) -> str:
    """``text`` with every spelling of ``tokens`` broken by a zero-width space after its first
    character, so a tokenizer reads it as plain text. Repeated until none is left, because breaking
    one spelling can expose another that overlapped it."""
    pattern = _pattern(tuple(tokens))
    if pattern is None:
        return text
    while pattern.search(text):
        text = pattern.sub(lambda m: m.group(0)[0] + BREAK + m.group(0)[1:], text)
    return text


def neutralise_messages(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """A copy of ``messages`` whose system and user contents cannot produce control tokens."""
    tokens = control_tokens(tokenizer)
    return [{**m, "content": escape_control_tokens(m["content"], tokens)}
            if m.get("role") in TEXT_ROLES and isinstance(m.get("content"), str) else dict(m) for m in messages]


def render_chat(
    tokenizer: Any,
    messages: Sequence[dict[str, str]],
    *,
    add_generation_prompt: bool,
    assistant_prefix: str = "",
) -> str:
    """Render a conversation with the tokenizer's own chat template.

    With ``add_generation_prompt`` the text ends where the assistant's answer starts, followed by
    ``assistant_prefix`` (prefilled answer text). Tokenise the result with
    ``add_special_tokens=False``: the template already places BOS where the model expects it.
    System and user contents are rendered through :func:`neutralise_messages` first, so the only
    control tokens in the text are the template's own (and those of assistant turns and the prefix).
    """
    messages = neutralise_messages(tokenizer, messages)
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )
    else:  # base models without a template: a plain, explicit format
        parts = [f"{m['role'].capitalize()}: {m['content']}\n" for m in messages]
        text = "".join(parts) + ("Assistant: " if add_generation_prompt else "")
    return text + assistant_prefix


def split_prompt_completion(
    tokenizer: Any, messages: Sequence[dict[str, str]]
) -> tuple[str, str]:
    """For a conversation that ends with an assistant turn, return (prompt text, answer text)
    such that ``prompt + answer`` is the full rendered conversation. Used by the collators to
    put only the final assistant turn in the loss."""
    if not messages or messages[-1]["role"] != "assistant":
        raise InputError("the conversation must end with an assistant message")
    prompt = render_chat(tokenizer, messages[:-1], add_generation_prompt=True)
    full = render_chat(tokenizer, messages, add_generation_prompt=False)
    if not full.startswith(prompt):
        raise InputError(
            "the chat template renders the prompt differently inside the full conversation; "
            "cannot locate the assistant turn"
        )
    return prompt, full[len(prompt):]
