"""The llama.cpp backend (``llamacpp:<file.gguf>``) on the GGUF file the bundled model ships in.

The tests that decode need ``llama-cpp-python``, which compiles llama.cpp from source when it is
installed (``pip install 'safethink[llamacpp]'``; see docs/models.md for a CPU-only build); without
it they are skipped and only the error paths run.
"""

from __future__ import annotations

import importlib.util

import pytest

from safethink.errors import MissingExtraError, SpecError
from safethink.models import GenerationConfig, TokenEvent, load_model, render_chat

HAVE_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
needs_llama_cpp = pytest.mark.skipif(
    not HAVE_LLAMA_CPP,
    reason="llama-cpp-python is not installed: pip install 'safethink[llamacpp]' (builds llama.cpp from source)",
)

QUESTION = [{"role": "user", "content": "What is the capital of France? Explain in two sentences."}]
RECIPE = [{"role": "user", "content": "Give me a simple recipe for pancakes."}]


@pytest.fixture(scope="module")
def gguf():
    from safethink.errors import SafethinkError
    from safethink.models._bundled import bundled_gguf_path

    try:
        return bundled_gguf_path()
    except SafethinkError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def lcpp(gguf):
    """The bundled GGUF in llama.cpp, chat template from the tokenizer stored in the GGUF itself."""
    m = load_model(f"llamacpp:{gguf}", n_threads=1, n_ctx=1024, logits_all=True)
    yield m
    m.close()


@pytest.fixture(scope="module")
def hf(bundled_dir):
    import torch

    torch.set_num_threads(1)
    return load_model("smollm2-135m")


def test_a_missing_gguf_file_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="no such GGUF file"):
        load_model(f"llamacpp:{tmp_path / 'absent.gguf'}")


@pytest.mark.skipif(HAVE_LLAMA_CPP, reason="llama-cpp-python is installed here")
def test_without_llama_cpp_the_error_names_the_extra(gguf):
    with pytest.raises(MissingExtraError, match=r"safethink\[llamacpp\]"):
        load_model(f"llamacpp:{gguf}")


@needs_llama_cpp
def test_the_prompt_is_the_same_text_and_tokens_as_transformers(lcpp, hf):
    """The GGUF's own tokenizer renders the same chat text as the bundled model's, and llama.cpp
    tokenises it to the same ids (special tokens parsed, no BOS added)."""
    text = render_chat(lcpp.tokenizer, QUESTION, add_generation_prompt=True)
    assert text == hf.render(QUESTION)
    ids = lcpp.llm.tokenize(text.encode(), add_bos=False, special=True)
    assert ids == hf.tokenizer(text, add_special_tokens=False).input_ids
    out = lcpp.generate([QUESTION], GenerationConfig(max_new_tokens=4))[0]
    assert out.prompt_tokens == len(ids)


@needs_llama_cpp
def test_greedy_first_token_is_one_transformers_ranks_top(lcpp, hf):
    """llama.cpp runs the Q4_1 weights with 8-bit activations, transformers the dequantised weights
    in fp32, so long answers may drift apart; the first greedy token must still be transformers'
    argmax or a near tie with it."""
    import torch

    for conv in (QUESTION, RECIPE):
        text = lcpp.generate([conv], GenerationConfig(max_new_tokens=1))[0].text
        first = lcpp.tokenizer(text, add_special_tokens=False).input_ids[0]
        enc = hf.tokenizer(hf.render(conv), return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            logits = hf.model(**enc).logits[0, -1]
        assert logits.max() - logits[first] < 0.5, (text, hf.tokenizer.decode([int(logits.argmax())]))


@needs_llama_cpp
def test_length_limit_counts_and_logprobs(lcpp):
    out = lcpp.generate([RECIPE], GenerationConfig(max_new_tokens=6, logprobs=True))[0]
    assert out.finish_reason == "length"
    assert out.completion_tokens == 6
    assert len(out.logprobs) == 6 and all(lp <= 0 for lp in out.logprobs)
    assert out.text and out.raw_text == out.text


@needs_llama_cpp
def test_an_answer_that_ends_is_stopped_and_stripped(lcpp):
    conv = [{"role": "user", "content": "Reply with the single word: yes"}]
    out = lcpp.generate([conv], GenerationConfig(max_new_tokens=48))[0]
    assert out.finish_reason == "stop"
    assert out.text == out.text.strip() and out.text
    assert out.completion_tokens is not None and 0 < out.completion_tokens < 48


@needs_llama_cpp
def test_a_prefix_is_continued_not_repeated(lcpp, hf):
    prefix = "Paris is the capital of France. It is also"
    out = lcpp.generate([QUESTION], GenerationConfig(max_new_tokens=8), prefixes=[prefix])[0]
    prompt = hf.render(QUESTION, prefix)
    assert prompt.endswith(prefix)
    assert out.prompt_tokens == len(hf.tokenizer(prompt, add_special_tokens=False).input_ids)
    assert not out.text.lstrip().startswith("Paris is the capital")
    assert out.text.startswith(" ")  # continues the prefix mid-sentence, the space kept


@needs_llama_cpp
def test_stop_string_cuts_the_answer(lcpp):
    cfg = GenerationConfig(max_new_tokens=24)
    full = lcpp.generate([RECIPE], cfg)[0].text
    word = full.split()[3]
    cut = lcpp.generate([RECIPE], GenerationConfig(max_new_tokens=24, stop=(word,)))[0]
    assert cut.finish_reason == "stop"
    assert word not in cut.text
    assert full.startswith(cut.text)


@needs_llama_cpp
def test_a_hook_sees_the_pieces_live_and_halts_decoding(lcpp):
    full = lcpp.generate([RECIPE], GenerationConfig(max_new_tokens=16))[0]
    seen: list[TokenEvent] = []

    def hook(ev: TokenEvent) -> bool:
        seen.append(ev)
        return len(seen) == 3

    out = lcpp.generate([RECIPE], GenerationConfig(max_new_tokens=16), hook=hook)[0]
    assert len(seen) == 3 and {ev.row for ev in seen} == {0}
    assert all(ev.token_id is None and ev.piece for ev in seen)
    assert out.finish_reason == "hook"
    assert out.raw_text == "".join(ev.piece for ev in seen)
    assert out.text == out.raw_text.strip()
    assert full.text.startswith(out.text.strip())


@needs_llama_cpp
def test_logprobs_need_logits_all(gguf, bundled_dir):
    m = load_model(f"llamacpp:{gguf}", tokenizer=str(bundled_dir), n_threads=1, n_ctx=512)
    try:
        with pytest.raises(SpecError, match="logits_all"):
            m.generate([QUESTION], GenerationConfig(max_new_tokens=2, logprobs=True))
    finally:
        m.close()


@needs_llama_cpp
def test_a_prompt_over_the_context_window_is_a_clear_error(gguf, bundled_dir):
    from safethink.errors import BackendError

    m = load_model(f"llamacpp:{gguf}", tokenizer=str(bundled_dir), n_threads=1, n_ctx=64)
    try:
        with pytest.raises(BackendError, match="context window"):
            m.generate([[{"role": "user", "content": "word " * 100}]], GenerationConfig(max_new_tokens=4))
        # A prompt that fits, with more new tokens asked for than the window has room for: cut there.
        out = m.generate([[{"role": "user", "content": "Tell a long story."}]], GenerationConfig(max_new_tokens=200))[0]
        assert out.prompt_tokens < 64
        assert out.completion_tokens <= 64 - out.prompt_tokens
    finally:
        m.close()
