"""R2D vocabulary: pivot and think tokens added as special tokens, ids always looked up by string.

The reference R2D code assumed the new tokens were the last rows of the vocabulary
(``vocab_size - 8``), which is wrong for tokenizers that already contain ``<think>`` (Qwen3,
DeepSeek-R1 distills) or whose embedding matrix is padded past the tokenizer length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..data._formats import PIVOT_RETHINK, PIVOT_SAFE, PIVOT_UNSAFE, R2D_SPECIAL_TOKENS, THINK_CLOSE, THINK_OPEN
from ..errors import SafethinkError


@dataclass(frozen=True)
class PivotIds:
    """Token ids of the R2D tokens in one tokenizer."""

    safe: int
    unsafe: int
    rethink: int
    think_open: int
    think_close: int

    @property
    def all(self) -> list[int]:
        return [self.safe, self.unsafe, self.rethink, self.think_open, self.think_close]


def add_r2d_tokens(tokenizer: Any) -> list[str]:
    """Add the R2D tokens the tokenizer lacks as special tokens; return the ones added.

    A token that already exists (for example ``<think>`` in a reasoning model's vocabulary) keeps
    its id; it is still registered as special so it is never split and stays one token.
    """
    vocab = tokenizer.get_vocab()
    missing = [t for t in R2D_SPECIAL_TOKENS if t not in vocab]
    tokenizer.add_special_tokens(
        {"extra_special_tokens": list(R2D_SPECIAL_TOKENS)}, replace_extra_special_tokens=False
    )
    return missing


def pivot_ids(tokenizer: Any) -> PivotIds:
    """Look the R2D token ids up by string; fail clearly if any is not a single token."""
    ids = {}
    for tok in R2D_SPECIAL_TOKENS:
        enc = tokenizer.encode(tok, add_special_tokens=False)
        tid = tokenizer.convert_tokens_to_ids(tok)
        if len(enc) != 1 or enc[0] != tid or tid is None or tid == tokenizer.unk_token_id:
            raise SafethinkError(
                f"R2D token {tok!r} is not a single token in this tokenizer (encodes to {enc}); "
                "call add_r2d_tokens(tokenizer) first"
            )
        ids[tok] = tid
    return PivotIds(safe=ids[PIVOT_SAFE], unsafe=ids[PIVOT_UNSAFE], rethink=ids[PIVOT_RETHINK],
                    think_open=ids[THINK_OPEN], think_close=ids[THINK_CLOSE])


NEW_TOKEN_WORDS = {"[SAFE]": "safe", "[UNSAFE]": "unsafe", "[RETHINK]": "rethink", "<think>": "think",
                   "</think>": "end of thinking"}
"""Words whose mean embedding starts each R2D token's row (a random row gets a logit far below the
learnt vocabulary, and a few hundred steps do not close the gap)."""


def init_new_token_rows(model: Any, tokenizer: Any, ids: list[int]) -> None:
    """Set the input (and untied output) rows of the new tokens ``ids`` to the mean embedding of
    their descriptive words (``NEW_TOKEN_WORDS``); tokens without a description keep their row."""
    import torch

    emb_in = model.get_input_embeddings().weight
    emb_out = model.get_output_embeddings().weight if model.get_output_embeddings() is not None else None
    with torch.no_grad():
        for tid in ids:
            word = NEW_TOKEN_WORDS.get(tokenizer.convert_ids_to_tokens(tid))
            if not word:
                continue
            src = tokenizer(" " + word, add_special_tokens=False).input_ids
            emb_in[tid] = emb_in[src].mean(0)
            if emb_out is not None and emb_out.data_ptr() != emb_in.data_ptr():
                emb_out[tid] = emb_out[src].mean(0)


def grow_embeddings(model: Any, tokenizer: Any) -> bool:
    """Resize the embedding (and tied / untied output) matrices when the tokenizer outgrew them.

    Never shrinks: some models pad the matrix past the tokenizer length on purpose. Returns
    whether it resized. ``load_model(..., adapter=RUN_DIR)`` applies the same rule before loading
    the adapter, so the shapes agree.
    """
    if len(tokenizer) <= model.get_input_embeddings().weight.shape[0]:
        return False
    model.resize_token_embeddings(len(tokenizer))
    return True
