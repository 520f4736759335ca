"""The transformers backend on a tiny random Llama with the real SmolLM2 tokenizer.

The shared tiny model's logits are nearly flat, so greedy decoding repeats one token and would
hide padding bugs. These tests use a sibling with larger initial weights (peaked, varied
logits), built once per module into a temp directory.
"""

from __future__ import annotations

import math

import pytest

from safethink.models import GenerationConfig, TokenEvent
from safethink.models._hf import HFChatModel

pytestmark = pytest.mark.timeout(120)

PROMPTS = [
    "Hi",
    "What is the capital of France? Please answer in one short sentence.",
    "Write a poem about the sea",
    "Explain, step by step and with care, how a refrigerator keeps food cold at home.",
    "Name three colours.",
]
N_NEW = 8
CONVS = [[{"role": "user", "content": p}] for p in PROMPTS]


@pytest.fixture(scope="module")
def model(tiny_dir, tmp_path_factory) -> HFChatModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from safethink.testing import tiny_model_config

    tok = AutoTokenizer.from_pretrained(str(tiny_dir))
    torch.manual_seed(1)
    net = AutoModelForCausalLM.from_config(tiny_model_config(tok, initializer_range=0.3), dtype=torch.float32)
    out = tmp_path_factory.mktemp("peaked-tiny")
    net.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return HFChatModel.from_path(str(out), spec=f"hf:{out}", device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def greedy(model):
    """Greedy answers to CONVS in batches of 3 (two batches, both padded), with logprobs."""
    return model.generate(CONVS, GenerationConfig(max_new_tokens=N_NEW, batch_size=3, logprobs=True))


def test_batched_greedy_equals_one_by_one(model, greedy):
    cfg = GenerationConfig(max_new_tokens=N_NEW, logprobs=True)
    batched = greedy
    single = [model.generate([c], cfg)[0] for c in CONVS]
    lengths = {o.prompt_tokens for o in single}
    assert len(lengths) > 3  # prompts really differ in length, so batches are padded
    for b, s in zip(batched, single):
        assert b.token_ids == s.token_ids and b.text == s.text
        assert b.prompt_tokens == s.prompt_tokens
        assert max(abs(x - y) for x, y in zip(b.logprobs, s.logprobs)) < 1e-3
    assert len({tuple(o.token_ids) for o in batched}) == len(CONVS)  # answers depend on prompts


def test_logprobs_one_per_token(model, greedy):
    for o in greedy:
        assert len(o.logprobs) == len(o.token_ids) == o.completion_tokens == N_NEW
        assert all(x <= 0 and math.isfinite(x) for x in o.logprobs)
        assert o.finish_reason == "length"
    assert model.generate(CONVS[:1], GenerationConfig(max_new_tokens=3))[0].logprobs is None


def test_hook_halts_one_row_and_leaves_the_others(model, greedy):
    cfg = GenerationConfig(max_new_tokens=N_NEW, batch_size=8)
    plain = greedy
    events: list[TokenEvent] = []

    def hook(ev: TokenEvent) -> bool:
        events.append(ev)
        return ev.row == 2 and len(ev.generated) == 3

    outs = model.generate(CONVS, cfg, hook=hook)
    assert outs[2].finish_reason == "hook" and outs[2].token_ids == plain[2].token_ids[:3]
    for i in (0, 1, 3, 4):
        assert outs[i].token_ids == plain[i].token_ids and outs[i].finish_reason == "length"
    row2 = [e for e in events if e.row == 2]
    assert len(row2) == 3  # no events for a halted row
    assert [e.token_id for e in row2] == plain[2].token_ids[:3]
    assert row2[1].piece == model.tokenizer.decode([plain[2].token_ids[1]])
    assert {e.row for e in events} == set(range(len(CONVS)))


def test_stop_string_cuts_the_answer(model, greedy):
    full = greedy[0].text
    stop = model.tokenizer.decode(greedy[0].token_ids[4:6])
    k = full.find(stop)
    assert k > 0
    out = model.generate(CONVS[:1], GenerationConfig(max_new_tokens=N_NEW, stop=(stop,)))[0]
    assert out.finish_reason == "stop"
    assert out.text == full[:k].strip() and stop not in out.text


def test_prefix_is_continued_not_repeated(model, greedy):
    full = greedy[:2]
    prefixes = [model.tokenizer.decode(o.token_ids[:3]) for o in full]
    cont = model.generate(CONVS[:2], GenerationConfig(max_new_tokens=N_NEW - 3), prefixes=prefixes)
    for f, c, p in zip(full, cont, prefixes):
        assert c.token_ids == f.token_ids[3:]
        assert not c.text.startswith(p)
    # Ending on a stop string: the continuation keeps its leading space, so prefix + text reads right.
    tok, ids = model.tokenizer, full[0].token_ids
    j = next(j for j in range(1, 5) if tok.decode([ids[j]]).startswith(" "))  # a space follows the prefix
    prefix, stop = tok.decode(ids[:j]), tok.decode(ids[j + 2:j + 4])
    k = full[0].text.find(stop)
    assert k > len(prefix)
    out = model.generate(CONVS[:1], GenerationConfig(max_new_tokens=N_NEW, stop=(stop,)), prefixes=[prefix])[0]
    assert out.finish_reason == "stop" and out.text.startswith(" ")
    assert prefix + out.text == full[0].text[:k].rstrip()
    with pytest.raises(ValueError, match="one entry per conversation"):
        model.generate(CONVS[:2], GenerationConfig(), prefixes=["a"])


def test_sampling_is_reproducible_with_a_seed(model, greedy):
    def run(seed):
        cfg = GenerationConfig(max_new_tokens=5, temperature=1.0, seed=seed, batch_size=3)
        return [o.token_ids for o in model.generate(CONVS[:3], cfg)]

    a, b, c = run(7), run(7), run(8)
    assert a == b
    assert a != c and a != [o.token_ids[:5] for o in greedy[:3]]


def test_end_of_turn_stops_generation(tiny_model):
    """A model whose every answer is end-of-turn returns empty text with reason 'stop'."""
    import torch

    eot = tiny_model.tokenizer.convert_tokens_to_ids("<|im_end|>")
    head = tiny_model.model.get_output_embeddings()
    saved = None if head.bias is None else head.bias.detach().clone()
    head.bias = torch.nn.Parameter(torch.zeros(head.weight.shape[0]))
    with torch.no_grad():
        head.bias[eot] = 1e4
    try:
        out = tiny_model.generate(CONVS[:2], GenerationConfig(max_new_tokens=5))
    finally:
        head.bias = None if saved is None else torch.nn.Parameter(saved)
    assert [(o.text, o.finish_reason, o.token_ids) for o in out] == [("", "stop", [])] * 2


def test_an_adapter_is_merged_for_speed_and_still_switches_off(model, tmp_path):
    """Loaded LoRA weights are folded into the base weights (same logits as the unmerged adapter); switching
    the adapter off for a probe gives the base model's logits, and folds it back in after."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    from safethink.probes._states import adapter_off

    path = model.model.name_or_path
    base = HFChatModel.from_path(path, spec="x", device="cpu", dtype="float32").model  # a copy: PEFT edits it
    torch.manual_seed(0)
    lora = get_peft_model(HFChatModel.from_path(path, spec="x", device="cpu", dtype="float32").model,
                          LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    lora.save_pretrained(str(tmp_path / "adapter"))
    loaded = HFChatModel.from_path(path, spec=f"hf:{path}", adapter=str(tmp_path / "adapter"), device="cpu",
                                   dtype="float32")
    layers = [m for m in loaded.model.modules() if hasattr(m, "merged")]
    assert layers and all(m.merged for m in layers)
    enc = model.tokenizer(["Name three colours."], return_tensors="pt")
    unmerged = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()
    with torch.inference_mode():
        want = unmerged(**enc).logits
        with unmerged.disable_adapter():
            want_base = unmerged(**enc).logits
        got = loaded.model(**enc).logits
        with adapter_off(loaded, "test")():
            got_base = loaded.model(**enc).logits
        again = loaded.model(**enc).logits
    assert (want - want_base).abs().max() > 1e-2  # the adapter changes the model
    assert torch.allclose(got, want, atol=1e-4) and torch.allclose(got_base, want_base, atol=1e-5)
    assert all(m.merged for m in layers) and torch.allclose(again, want, atol=1e-4)


def test_length_batches_keep_long_texts_from_padding_short_ones():
    from safethink.models._base import length_batches

    lengths = [60, 1300, 50, 400, 55, 300, 45, 64, 250]
    batches = length_batches(lengths, 3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # each index exactly once
    assert batches[0] == [1]  # the 1,300-token text alone: the next is under half its length
    assert batches[1] == [3, 5, 8]  # 400, 300, 250: within half of 400, and batch_size caps it at 3
    for b in batches:
        assert len(b) <= 3
        assert [lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True)
        assert min(lengths[i] for i in b) >= 0.5 * lengths[b[0]]
    assert length_batches([10, 10, 10], 2) == [[0, 1], [2]]
    assert length_batches([], 4) == []
    with pytest.raises(ValueError):
        length_batches([1], 0)
