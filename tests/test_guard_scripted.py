"""A real tiny transformers model made to say scripted text, for guard and server tests.

``Scripted`` registers a forward hook on the tiny Llama that overwrites the last position's
logits with the next token of a script, so the real decode loop, KV cache, token hooks,
prefixes and detokenisation all run; only *which* token wins is decided by the test. The script
is chosen per row from the row's prompt text, so one batch can mix behaviours.

This module also holds the tests of that helper itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest

from safethink.data._formats import R2D_SPECIAL_TOKENS
from safethink.models import GenerationConfig

ScriptFn = Callable[[str, int], str]
"""(rendered prompt text of the row, index of the generate call) -> the text to emit."""


class Scripted:
    def __init__(self, chat_model, script: ScriptFn):
        self.chat = chat_model
        self.tok = chat_model.tokenizer
        self.script = script
        self.calls = 0
        self._rows: list[list[int]] = []
        self._step = 0
        self._eos = self.tok.convert_tokens_to_ids("<|im_end|>")

    def _hook(self, module, args, kwargs, output):
        import torch

        ids = kwargs.get("input_ids")
        if ids is None and args:
            ids = args[0]
        if ids is not None and ids.shape[1] > 1:  # prefill: a new generate call starts
            texts = self.tok.batch_decode(ids, skip_special_tokens=False)
            self._rows = [self.tok(self.script(t, self.calls), add_special_tokens=False).input_ids for t in texts]
            self._step = 0
            self.calls += 1
        logits = output.logits
        with torch.no_grad():
            for b, row in enumerate(self._rows):
                tid = row[self._step] if self._step < len(row) else self._eos
                logits[b, -1, :] = -1e9
                logits[b, -1, tid] = 1e9
        self._step += 1
        return output

    @contextlib.contextmanager
    def active(self) -> Iterator[Scripted]:
        handle = self.chat.model.register_forward_hook(self._hook, with_kwargs=True)
        try:
            yield self
        finally:
            handle.remove()


def by_marker(rules: dict[str, str], default: str = "Sure, here you go.") -> ScriptFn:
    """Emit ``rules[m]`` for the first marker ``m`` found in the prompt, else ``default``."""

    def fn(prompt: str, call: int) -> str:
        return next((out for m, out in rules.items() if m in prompt), default)

    return fn


def make_r2d_model(tiny_dir):
    """The tiny model with the R2D pivot/think tokens added to a copy of its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from safethink.models._hf import HFChatModel

    tok = AutoTokenizer.from_pretrained(str(tiny_dir))
    tok.add_tokens(list(R2D_SPECIAL_TOKENS), special_tokens=True)
    net = AutoModelForCausalLM.from_pretrained(str(tiny_dir), dtype=torch.float32)
    net.resize_token_embeddings(len(tok))
    return HFChatModel(net, tok, spec="hf:tiny-r2d")


@pytest.fixture(scope="session")
def r2d_model(tiny_dir):
    return make_r2d_model(tiny_dir)


CFG = GenerationConfig(max_new_tokens=48)


def test_scripted_model_says_the_script(tiny_model):
    s = Scripted(tiny_model, by_marker({"capital": "Paris is the capital."}, default="No idea."))
    with s.active():
        outs = tiny_model.generate([[{"role": "user", "content": "What is the capital of France?"}],
                                    [{"role": "user", "content": "hello"}]], CFG)
    assert [o.text for o in outs] == ["Paris is the capital.", "No idea."]
    assert all(o.finish_reason == "stop" for o in outs)
    # Once the hook is gone the random model says something else.
    plain = tiny_model.generate([[{"role": "user", "content": "hello"}]], GenerationConfig(max_new_tokens=5))
    assert plain[0].text != "No idea."


def test_pivots_are_single_special_tokens(r2d_model):
    tok = r2d_model.tokenizer
    for t in R2D_SPECIAL_TOKENS:
        assert len(tok(t, add_special_tokens=False).input_ids) == 1
    s = Scripted(r2d_model, lambda p, c: "<think> fine [SAFE] </think> [SAFE] Hello [SAFE]")
    with s.active():
        out = r2d_model.generate([[{"role": "user", "content": "hi"}]], CFG)[0]
    assert "[SAFE]" in out.raw_text and "[SAFE]" not in out.text
