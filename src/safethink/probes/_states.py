"""Hidden states of prompts: what a linear probe reads, taken from the guarded model itself."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import SafethinkError, SpecError
from ..models import ChatModel, Conversation, ProgressFn
from ._base import Pool


def model_parts(model: ChatModel) -> tuple[Any, Any]:
    """The transformers network and tokenizer behind ``model``; a probe reads the model's own weights."""
    net, tok = getattr(model, "model", None), getattr(model, "tokenizer", None)
    if net is None or tok is None:
        raise SafethinkError(f"a probe reads the model's hidden states; it needs a local transformers model "
                             f"(smollm2-135m, hf:...), not {model.spec}")
    return net, tok


def adapter_off(model: ChatModel, why: str) -> Any:
    """A context manager factory under which ``model`` runs as its base model (no-op without an adapter)."""
    net, _ = model_parts(model)
    if not getattr(model, "adapter", None):
        return contextlib.nullcontext
    if not hasattr(net, "disable_adapter"):
        raise SpecError(f"cannot switch off the adapter of {model.spec} to {why}")

    @contextlib.contextmanager
    def off() -> Iterator[None]:
        # Switching a merged adapter off unmerges it; fold it back in after, so generation stays fast.
        merged = any(getattr(m, "merged", False) for m in net.modules())
        with net.disable_adapter():
            yield
        if merged:
            net.merge_adapter()

    return off


def prompt_states(model: ChatModel, conversations: Sequence[Conversation], *, layers: Sequence[int] | None = None,
                  pool: Pool = "last", batch_size: int = 16, base: bool = False,
                  progress: ProgressFn | None = None) -> Any:
    """Hidden states of each conversation rendered with the generation prompt, shape
    ``(n, len(layers), hidden)`` as float32 numpy: the state at the last prompt token (``last``) or the
    mean over the prompt (``mean``). Layer 0 is the embeddings; ``None`` means every layer. ``base``
    reads the base model's states with the model's adapter switched off."""
    import numpy as np
    import torch

    net, tok = model_parts(model)
    texts = [model.render(c) for c in conversations]
    lengths = [len(tok(t, add_special_tokens=False).input_ids) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])  # batches of similar length pad little
    device = next(net.parameters()).device
    out: list[Any] = [None] * len(texts)
    side = tok.padding_side
    off = adapter_off(model, "read the base model's states") if base else contextlib.nullcontext
    try:
        tok.padding_side = "right"
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.inference_mode(), off():
                hs = _hidden_states(net, enc)
                pick = range(len(hs)) if layers is None else layers
                for k in pick:
                    if not 0 <= k < len(hs):
                        raise SpecError(f"probe layer {k} is out of range; the model has layers 0..{len(hs) - 1}")
                mask = enc.attention_mask
                n = mask.sum(dim=1)
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
    finally:
        tok.padding_side = side
    if not out:
        return np.zeros((0, 0, 0), dtype=np.float32)
    return np.stack(out).astype(np.float32)


def _hidden_states(net: Any, enc: Any) -> Any:
    """Every layer's hidden states of a batch. The language-model head runs on the last position only
    (``logits_to_keep=1``) where the model takes it: full-sequence logits over a large vocabulary cost more
    memory than all the hidden states together."""
    try:
        return net(**enc, output_hidden_states=True, logits_to_keep=1).hidden_states
    except TypeError as e:
        if "logits_to_keep" not in str(e):
            raise
        return net(**enc, output_hidden_states=True).hidden_states
