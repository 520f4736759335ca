"""Show a finished answer to a token hook after the fact, and cut it where the hook halts.

Backends that cannot call a hook while decoding (vLLM) and answers taken from a cache use this, so a
decode-time guard acts on them exactly as it would live: the hook sees the same tokens in the same
order, and the answer keeps the halting token, as a live hook's row does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from ._types import Completion, TokenEvent, TokenHook


def replay_hook(hook: TokenHook, row: int, ids: Sequence[int], eos: Sequence[int],
                piece: Callable[[int], str]) -> int | None:
    """Show finished tokens to a hook one by one; return how many to keep if it halts the row
    (the halting token included, as with a live hook), else None."""
    eos_set = set(eos)
    for j, t in enumerate(ids):
        if t in eos_set:
            continue
        if hook(TokenEvent(row=row, token_id=t, piece=piece(t), generated=list(ids[:j + 1]))):
            return j + 1
    return None


def cut_completion(tokenizer: Any, completion: Completion, keep: int, *, prefixed: bool = False) -> Completion:
    """``completion`` halted by a hook after its first ``keep`` tokens: text and raw text decoded again
    from those ids (special tokens dropped from the text, kept in the raw text), as a live halt reads."""
    ids = list(completion.token_ids or [])[:keep]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    return replace(completion, token_ids=ids, finish_reason="hook", completion_tokens=len(ids),
                   text=text.rstrip() if prefixed else text.strip(),
                   raw_text=tokenizer.decode(ids, skip_special_tokens=False),
                   logprobs=completion.logprobs[:keep] if completion.logprobs else completion.logprobs)
