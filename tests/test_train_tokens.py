"""R2D token ids are looked up by string, also when the tokenizer already has some of them."""

from __future__ import annotations

import copy

import pytest

from safethink.data import R2D_SPECIAL_TOKENS
from safethink.train import add_r2d_tokens, grow_embeddings, pivot_ids


def test_pivot_ids_when_tokenizer_already_has_think(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.add_tokens(["<think>"])  # as a reasoning model's tokenizer would have it
    think = tok.convert_tokens_to_ids("<think>")
    before = len(tok)
    added = add_r2d_tokens(tok)
    assert "<think>" not in added and set(added) == set(R2D_SPECIAL_TOKENS) - {"<think>"}
    assert len(tok) == before + 4
    ids = pivot_ids(tok)
    assert ids.think_open == think  # kept its id
    assert len(set(ids.all)) == 5
    # the reference code's assumption (new tokens are the last rows, in order) does not hold here
    assert ids.all != list(range(len(tok) - 5, len(tok)))
    text = "<think>\nstep [SAFE]\nbad [UNSAFE]\nhm [RETHINK]\n</think> [SAFE]"
    enc = tok(text, add_special_tokens=False).input_ids
    for t in (ids.safe, ids.unsafe, ids.rethink, ids.think_open, ids.think_close):
        assert t in enc
    assert enc.count(ids.safe) == 2


def test_pivot_ids_fails_clearly_without_tokens(tokenizer):
    from safethink.errors import SafethinkError

    with pytest.raises(SafethinkError, match="add_r2d_tokens"):
        pivot_ids(tokenizer)


def test_grow_embeddings_never_shrinks(tokenizer, tiny_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_dir))
    tok = copy.deepcopy(tokenizer)
    assert grow_embeddings(model, tok) is False
    add_r2d_tokens(tok)
    assert grow_embeddings(model, tok) is True
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert model.get_output_embeddings().weight.shape[0] == len(tok)


def test_new_token_rows_start_from_their_words(tokenizer, tiny_dir):
    from transformers import AutoModelForCausalLM

    from safethink.train._tokens import NEW_TOKEN_WORDS, init_new_token_rows

    model = AutoModelForCausalLM.from_pretrained(str(tiny_dir))
    tok = copy.deepcopy(tokenizer)
    n = model.get_input_embeddings().weight.shape[0]
    add_r2d_tokens(tok)
    grow_embeddings(model, tok)
    ids = pivot_ids(tok)
    init_new_token_rows(model, tok, [i for i in ids.all if i >= n])
    emb = model.get_input_embeddings().weight
    for token, word in NEW_TOKEN_WORDS.items():
        src = tok(" " + word, add_special_tokens=False).input_ids
        tid = tok.convert_tokens_to_ids(token)
        assert emb[tid].detach().allclose(emb[src].mean(0).detach()), token
    # tied output matrix: the same rows
    assert model.get_output_embeddings().weight[ids.safe].allclose(emb[ids.safe])
