"""White-box access to a local transformers model: hidden states, token log-probs, the adapter switch, and the
one error for a model without local weights."""

from __future__ import annotations

import json

import pytest

from safethink.errors import SpecError
from safethink.models import load_model
from safethink.models._whitebox import WhiteBox, white_box

TEXTS = ["Name three colours.", "What is the capital of France? Answer in one word, please."]


def test_hidden_states_have_one_layer_per_block_plus_embeddings(tiny_model):
    wb = white_box(tiny_model, "test")
    assert white_box(wb, "test") is wb
    batch = wb.encode(TEXTS)
    hs = wb.hidden_states(batch)
    cfg = wb.net.config
    assert len(hs) == cfg.num_hidden_layers + 1
    n_tokens = [len(wb.tokenizer(t, add_special_tokens=False).input_ids) for t in TEXTS]
    assert batch.lengths.tolist() == n_tokens
    for h in hs:
        assert tuple(h.shape) == (len(TEXTS), max(n_tokens), cfg.hidden_size)


def test_token_logprobs_equal_one_forward_per_text(tiny_model):
    import torch

    wb = white_box(tiny_model, "test")
    got = wb.token_logprobs(TEXTS, batch_size=2)  # padded together
    for text, lp in zip(TEXTS, got):
        ids = wb.tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
        with torch.no_grad():
            logits = tiny_model.model(input_ids=ids).logits[0, :-1].float()
        want = torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None])[:, 0]
        assert lp.shape == want.shape
        assert torch.allclose(lp, want, atol=1e-4)
        assert (lp <= 0).all()


def test_encode_restores_the_padding_side_and_gives_offsets(tiny_model):
    wb = white_box(tiny_model, "test")
    side = wb.tokenizer.padding_side
    wb.tokenizer.padding_side = "left"
    try:
        batch = wb.encode(TEXTS, offsets=True)
        assert wb.tokenizer.padding_side == "left"
    finally:
        wb.tokenizer.padding_side = side
    assert batch.mask[0, 0] == 1  # right padding: real tokens first
    assert batch.offsets is not None and batch.offsets[1][-1][1] == len(TEXTS[1])





def test_adapter_off_gives_the_base_logits_and_merges_back(tiny_model, adapted_model):
    import torch

    adapted = white_box(adapted_model, "test")
    plain = white_box(tiny_model, "test")
    base = plain.logits(plain.encode(TEXTS)).float()
    batch = adapted.encode(TEXTS)
    with_adapter = adapted.logits(batch).float()
    layers = [m for m in adapted.net.modules() if hasattr(m, "merged")]
    assert layers and all(m.merged for m in layers)
    with adapted.adapter_off("test"):
        off = adapted.logits(batch).float()
    again = adapted.logits(batch).float()
    mask = batch.mask.bool()
    assert (with_adapter - base)[mask].abs().max() > 1e-2
    assert torch.allclose(off[mask], base[mask], atol=1e-4)
    assert all(m.merged for m in layers) and torch.allclose(again[mask], with_adapter[mask], atol=1e-4)
    # Without an adapter the switch does nothing.
    with plain.adapter_off("test"):
        assert torch.allclose(plain.logits(plain.encode(TEXTS)).float()[mask], base[mask])


def test_a_model_without_local_weights_gets_one_clear_error(tmp_path):
    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps({"text": "hello"}) + "\n")
    mock = load_model(f"mock:{answers}")
    with pytest.raises(SpecError) as e:
        white_box(mock, "the thing")
    assert str(e.value) == f"the thing needs a local transformers model (smollm2-135m, hf:...), not {mock.spec}"
    with pytest.raises(SpecError, match=r"not no model; try this$"):
        white_box(None, "the thing", hint="try this")


def test_consumers_share_the_error(tmp_path):
    from safethink.guard._filters import log_perplexities
    from safethink.probes import prompt_states

    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps({"text": "hello"}) + "\n")
    mock = load_model(f"mock:{answers}")
    for call in (lambda: log_perplexities(mock, ["hi"]),
                 lambda: prompt_states(mock, [[{"role": "user", "content": "hi"}]])):
        with pytest.raises(SpecError, match=f"needs a local transformers model .*, not {mock.spec}$"):
            call()


def test_white_box_wraps_not_copies(tiny_model):
    wb = white_box(tiny_model, "test")
    assert isinstance(wb, WhiteBox) and wb.net is tiny_model.model and wb.model is tiny_model.model
    assert wb.tokenizer is tiny_model.tokenizer and wb.spec == tiny_model.spec
    conv = [{"role": "user", "content": "hi"}]
    assert wb.render(conv, "ok") == tiny_model.render(conv, "ok")
