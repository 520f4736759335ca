"""The one place that turns chat messages into model text.

Training, generation, guards and the server all call :func:`render_chat`, so the template a
model is trained with is the template it is run with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import InputError

ROLES = ("system", "user", "assistant")


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
    """
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
