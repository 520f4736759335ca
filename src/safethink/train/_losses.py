"""Training losses as pure functions of tensors.

Conventions (the Hugging Face causal-LM ones): ``labels`` has the shape of ``input_ids`` with
``-100`` wherever a token is not trained (prompt, padding); the logit at position ``t`` predicts
the label at ``t + 1``. Per-token inputs that are already shifted (``log_probs`` from TRL's fused
LM head) have length ``T - 1``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def weighted_token_nll(
    log_probs: torch.Tensor,
    label_mask: torch.Tensor,
    example_weights: torch.Tensor | None,
    num_items: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """Mean negative log-likelihood over trained tokens, each token weighted by its example's weight.

    ``log_probs``/``label_mask``: ``[B, T-1]`` (log-probability of each next-token label, and
    whether it is trained); ``example_weights``: ``[B]``, ``[B, T]`` (per token, unshifted, as the
    collator builds them) or None (all 1). The sum is divided by
    ``num_items`` (the trained-token count of the whole accumulated batch, as the Trainer passes
    it) or by this batch's trained-token count, so gradient accumulation and data parallelism give
    the same gradient as one big batch.

    SCoT's ``CE(refusal) + lambda * CE(retain)`` is this with weight 1 on refusal examples and
    ``lambda`` on retain examples.
    """
    nll = -(log_probs * label_mask)
    if example_weights is not None:
        w = example_weights.to(nll.dtype)
        # [B]: one weight per example; [B, T]: per input position, aligned to the next-token labels
        nll = nll * (w.unsqueeze(1) if w.dim() == 1 else w[:, 1:])
    denom = label_mask.sum() if num_items is None else num_items
    return nll.sum() / torch.as_tensor(denom, device=nll.device).clamp(min=1)


def next_token_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From full ``[B, T, V]`` logits and ``[B, T]`` labels (-100 = not trained), the same per-token
    fields TRL's fused head returns, all ``[B, T-1]``: log-probability of each next-token label (0 where
    untrained), the trained-token mask, and whether the label was the top-1 prediction."""
    logits = logits[:, :-1].float()
    target = labels[:, 1:]
    mask = target != -100
    safe = target.clamp(min=0).unsqueeze(-1)
    log_probs = (logits.gather(-1, safe).squeeze(-1) - logits.logsumexp(-1)) * mask
    is_top1 = (logits.argmax(-1) == target) & mask
    return log_probs, mask, is_top1


def pivot_positions(labels: torch.Tensor, safe_id: int, unsafe_id: int) -> torch.Tensor:
    """Boolean ``[B, T-1]`` mask of the (shifted) positions whose next-token label is ``[SAFE]``
    or ``[UNSAFE]``: the hidden state / logits at these positions predict a pivot."""
    nxt = labels[:, 1:]
    return (nxt == safe_id) | (nxt == unsafe_id)


def cpo_loss(gold_logits: torch.Tensor, opposite_logits: torch.Tensor, gold_is_safe: torch.Tensor) -> torch.Tensor:
    """Contrastive Pivot Optimization (R2D).

    For every pivot position ``i``: ``l_i = -log sigmoid(z_gold_i - z_opposite_i)``, where gold is
    the labelled pivot and opposite the other one (``[SAFE]`` <-> ``[UNSAFE]``). The loss is the
    mean of ``l`` over ``[SAFE]`` positions plus the mean over ``[UNSAFE]`` positions, so the rare
    ``[UNSAFE]`` pivots weigh as much as the common ``[SAFE]`` ones. A class with no position adds 0.
    All inputs are ``[N]``.
    """
    per_pos = -F.logsigmoid(gold_logits - opposite_logits)
    total = per_pos.sum() * 0.0  # keeps the graph (and device/dtype) when there are no pivots
    for cls in (gold_is_safe, ~gold_is_safe):
        n = cls.sum()
        if n > 0:
            total = total + (per_pos * cls).sum() / n
    return total


def cpo_from_logits(
    logits: torch.Tensor, labels: torch.Tensor, safe_id: int, unsafe_id: int
) -> torch.Tensor:
    """CPO from full ``[B, T, V]`` logits and unshifted ``labels`` (reference path; the trainer
    computes the same value from the hidden states at pivot positions only)."""
    pos = pivot_positions(labels, safe_id, unsafe_id)
    z = logits[:, :-1][pos]  # [N, V]
    gold_is_safe = labels[:, 1:][pos] == safe_id
    z_safe, z_unsafe = z[:, safe_id], z[:, unsafe_id]
    gold = torch.where(gold_is_safe, z_safe, z_unsafe)
    opposite = torch.where(gold_is_safe, z_unsafe, z_safe)
    return cpo_loss(gold, opposite, gold_is_safe)


def cpo_from_pivot_logits(pair_logits: torch.Tensor, gold_is_safe: torch.Tensor) -> torch.Tensor:
    """CPO from ``[N, 2]`` logits ``(z_safe, z_unsafe)`` taken at pivot positions."""
    z_safe, z_unsafe = pair_logits[:, 0], pair_logits[:, 1]
    gold = torch.where(gold_is_safe, z_safe, z_unsafe)
    opposite = torch.where(gold_is_safe, z_unsafe, z_safe)
    return cpo_loss(gold, opposite, gold_is_safe)
