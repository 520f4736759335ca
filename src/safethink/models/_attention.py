"""A CPU attention for generation: PyTorch's fused attention for the prompt, a plain grouped matmul for each
new token.

With bf16 weights on a CPU, ``scaled_dot_product_attention`` is slow for a single query against a
grouped-query KV cache (the one-token steps of generation): on 2 AVX-512 BF16 cores it decoded the bundled
model at 232 tokens/s (batch 32, 256-token prompts, no padding) and 528 with padding, against 592 and 593 for
the grouped matmul below (BENCHMARKS.md, "CPU attention for one-token steps"). The prompt (many queries at once) stays
on the fused kernel, which is the faster one there. In fp32 both give the same greedy tokens.

The implementation is registered with transformers under :data:`CPU_ATTENTION`
(``attn_implementation=CPU_ATTENTION``); the masks are the ones built for ``sdpa``.
"""

from __future__ import annotations

from typing import Any

CPU_ATTENTION = "safethink_cpu"


def _attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
               scaling: float | None = None, **kwargs: Any) -> tuple[Any, None]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    if q_len > 1 or module.training or heads % kv_heads or kwargs.get("output_attentions"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    import torch

    # One query per row: the query heads that share a KV head become rows of one matmul against that head,
    # so the cache is read once and never repeated per query head.
    grouped = query.reshape(batch, kv_heads, heads // kv_heads, dim)
    scores = torch.matmul(grouped, key.transpose(2, 3)) * (dim ** -0.5 if scaling is None else scaling)
    if attention_mask is not None:  # (batch, 1, 1, kv) from the sdpa mask builder
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, float("-inf"))
        else:
            scores = scores + attention_mask
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    out = torch.matmul(weights, value).reshape(batch, heads, 1, dim)
    return out.transpose(1, 2).contiguous(), None


def register_cpu_attention() -> str:
    """Register :data:`CPU_ATTENTION` with transformers (once; later calls are no-ops) and return its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(CPU_ATTENTION, _attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(CPU_ATTENTION, sdpa_mask)
    return CPU_ATTENTION
