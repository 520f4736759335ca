"""Hidden states of prompts: what a linear probe reads, taken from the guarded model itself."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from ..errors import SpecError
from ..models import ChatModel, Conversation, ProgressFn
from ..models._base import length_batches
from ..models._whitebox import WhiteBox, white_box
from ._base import Pool

_WHAT = "a probe (it reads the model's hidden states)"


def model_parts(model: ChatModel) -> tuple[Any, Any]:
    """The transformers network and tokenizer behind ``model``; a probe reads the model's own weights."""
    wb = white_box(model, _WHAT)
    return wb.net, wb.tokenizer


def adapter_off(model: ChatModel, why: str) -> Any:
    """A context manager factory under which ``model`` runs as its base model (no-op without an adapter)."""
    wb = white_box(model, _WHAT)
    wb.adapter_off(why)  # fails here, not on entry, when the adapter cannot be switched off
    return lambda: wb.adapter_off(why)


def prompt_states(model: ChatModel | WhiteBox, conversations: Sequence[Conversation], *,
                  layers: Sequence[int] | None = None, pool: Pool = "last", batch_size: int = 16,
                  base: bool = False, progress: ProgressFn | None = None) -> Any:
    """Hidden states of each conversation rendered with the generation prompt, shape
    ``(n, len(layers), hidden)`` as float32 numpy: the state at the last prompt token (``last``) or the
    mean over the prompt (``mean``). Layer 0 is the embeddings; ``None`` means every layer. ``base``
    reads the base model's states with the model's adapter switched off."""
    import numpy as np
    import torch

    wb = white_box(model, _WHAT)
    tok = wb.tokenizer
    texts = [wb.render(c) for c in conversations]
    lengths = [len(tok(t, add_special_tokens=False).input_ids) for t in texts]
    out: list[Any] = [None] * len(texts)
    if base:
        wb.adapter_off("read the base model's states")  # fail before any work
    for idx in length_batches(lengths, batch_size):  # batches of similar length pad little
        batch = wb.encode([texts[i] for i in idx])
        off = wb.adapter_off("read the base model's states") if base else contextlib.nullcontext()
        with torch.inference_mode(), off:
            hs = wb.hidden_states(batch)
            pick = range(len(hs)) if layers is None else layers
            for k in pick:
                if not 0 <= k < len(hs):
                    raise SpecError(f"probe layer {k} is out of range; the model has layers 0..{len(hs) - 1}")
            mask = batch.mask
            n = batch.lengths
            if pool == "last":  # right padding: the last real token is at n - 1
                rows = torch.arange(len(idx), device=mask.device)
                h = torch.stack([hs[k][rows, n - 1].float() for k in pick], dim=1)  # (b, L, d)
            else:
                w = mask.unsqueeze(-1).float()
                h = torch.stack([(hs[k].float() * w).sum(dim=1) / n.unsqueeze(-1) for k in pick], dim=1)
            del hs
        for b, i in enumerate(idx):
            out[i] = h[b].cpu().numpy()
        if progress:
            progress(len(idx))
    if not out:
        return np.zeros((0, 0, 0), dtype=np.float32)
    return np.stack(out).astype(np.float32)
