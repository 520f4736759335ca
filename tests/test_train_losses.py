"""The training losses against hand computations."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from safethink.train._losses import (  # noqa: E402
    IGNORE_INDEX,
    cpo_from_logits,
    cpo_from_pivot_logits,
    cpo_loss,
    pivot_positions,
    weighted_token_nll,
)


def _nls(x: float) -> float:
    """-log sigmoid(x), by hand."""
    return math.log(1.0 + math.exp(-x))


def test_cpo_loss_averages_each_class_then_adds():
    gold = torch.tensor([2.0, 0.5, -1.0, 3.0])
    opp = torch.tensor([1.0, 0.5, 1.0, 0.0])
    safe = torch.tensor([True, True, True, False])  # three SAFE positions, one UNSAFE
    want = (_nls(1.0) + _nls(0.0) + _nls(-2.0)) / 3 + _nls(3.0)
    assert cpo_loss(gold, opp, safe).item() == pytest.approx(want, rel=1e-6)


def test_cpo_loss_one_class_only_and_empty():
    gold, opp = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0])
    assert cpo_loss(gold, opp, torch.tensor([False, False])).item() == pytest.approx((_nls(1) + _nls(2)) / 2)
    empty = torch.zeros(0, requires_grad=True)
    out = cpo_loss(empty, empty, torch.zeros(0, dtype=torch.bool))
    assert out.item() == 0.0 and out.requires_grad


def test_cpo_from_logits_matches_hand_computation():
    safe_id, unsafe_id, vocab = 5, 6, 8
    torch.manual_seed(0)
    logits = torch.randn(2, 4, vocab)
    # row 0: the token after position 1 is [SAFE]; row 1: after position 0 [UNSAFE], after 2 [SAFE]
    labels = torch.tensor([[IGNORE_INDEX, 3, safe_id, 2], [IGNORE_INDEX, unsafe_id, 4, safe_id]])
    z = logits
    safe_terms = [_nls((z[0, 1, safe_id] - z[0, 1, unsafe_id]).item()), _nls((z[1, 2, safe_id] - z[1, 2, unsafe_id]).item())]
    unsafe_terms = [_nls((z[1, 0, unsafe_id] - z[1, 0, safe_id]).item())]
    want = sum(safe_terms) / 2 + sum(unsafe_terms) / 1
    assert cpo_from_logits(logits, labels, safe_id, unsafe_id).item() == pytest.approx(want, rel=1e-5)
    # the trainer's path: only the [N, 2] pair logits at pivot positions
    pos = pivot_positions(labels, safe_id, unsafe_id)
    assert pos.tolist() == [[False, True, False], [True, False, True]]
    pair = logits[:, :-1][pos][:, [safe_id, unsafe_id]]
    gold_is_safe = labels[:, 1:][pos] == safe_id
    assert cpo_from_pivot_logits(pair, gold_is_safe).item() == pytest.approx(want, rel=1e-5)


def test_cpo_gradient_pushes_gold_above_opposite():
    pair = torch.zeros(1, 2, requires_grad=True)
    cpo_from_pivot_logits(pair, torch.tensor([False])).backward()  # gold is [UNSAFE] (column 1)
    assert pair.grad[0, 1] < 0 < pair.grad[0, 0]


def test_weighted_token_nll_by_hand():
    log_probs = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    w = torch.tensor([1.0, 0.25])
    assert weighted_token_nll(log_probs, mask, w).item() == pytest.approx((1 + 2 + 0.25 * 0.5) / 3)
    assert weighted_token_nll(log_probs, mask, None).item() == pytest.approx((1 + 2 + 0.5) / 3)
    # with the accumulated batch's token count (gradient accumulation)
    assert weighted_token_nll(log_probs, mask, None, num_items=7).item() == pytest.approx(3.5 / 7)


def test_next_token_log_probs_matches_cross_entropy():
    import torch
    import torch.nn.functional as F

    from safethink.train._losses import next_token_log_probs

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    labels = torch.tensor([[-100, -100, 3, 4, 7], [-100, 1, 2, -100, -100]])
    lp, mask, top1 = next_token_log_probs(logits, labels)
    assert lp.shape == mask.shape == top1.shape == (2, 4)
    assert mask.tolist() == [[False, True, True, True], [True, True, False, False]]
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum")
    assert torch.allclose(-lp.sum(), ce, atol=1e-5)
    assert (lp[~mask] == 0).all()
    assert top1[0, 1].item() == (logits[0, 1].argmax().item() == 3)


def test_weighted_token_nll_per_token_weights_align_with_next_token_labels():
    # [B, T] weights are per input position (as the collator builds them); label t+1 takes weight t+1
    log_probs = torch.tensor([[-1.0, -2.0, -4.0]])  # [B, T-1]: log p(label_1), log p(label_2), log p(label_3)
    mask = torch.tensor([[True, True, True]])
    w = torch.tensor([[9.0, 1.0, 3.0, 1.0]])  # position 0 is a prompt token: never weighted in
    assert weighted_token_nll(log_probs, mask, w).item() == pytest.approx((1 * 1 + 3 * 2 + 1 * 4) / 3)
