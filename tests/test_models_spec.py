"""Model spec strings, load_model routing and its errors, optional backends' missing extras."""

from __future__ import annotations

import importlib.util

import pytest

from safethink.errors import MissingExtraError, SpecError
from safethink.models import ModelSpec, load_model, parse_model_spec
from safethink.models._vllm import replay_hook


@pytest.mark.parametrize("text", ["smollm2-135m", "SmolLM2-135M", "smollm2-135m-instruct", "default", " smollm2-135m "])
def test_bundled_aliases(text):
    assert parse_model_spec(text) == ModelSpec("bundled", "smollm2-135m")


@pytest.mark.parametrize(("text", "kind", "target"), [
    ("hf:HuggingFaceTB/SmolLM2-135M-Instruct", "hf", "HuggingFaceTB/SmolLM2-135M-Instruct"),
    ("hf:/models/my model", "hf", "/models/my model"),
    ("hf:C:/models/x", "hf", "C:/models/x"),
    ("vllm:meta-llama/Llama-3.1-8B-Instruct", "vllm", "meta-llama/Llama-3.1-8B-Instruct"),
    ("llamacpp:~/m/model.Q4.gguf", "llamacpp", "~/m/model.Q4.gguf"),
])
def test_local_kinds(text, kind, target):
    s = parse_model_spec(text)
    assert (s.kind, s.target, s.base_url) == (kind, target, None)
    assert parse_model_spec(str(s)) == s


def test_openai_spec_with_model_containing_at_and_trailing_slash():
    s = parse_model_spec("openai:org/model@v2@http://127.0.0.1:8000/v1/")
    assert (s.kind, s.target, s.base_url) == ("openai", "org/model@v2", "http://127.0.0.1:8000/v1")
    assert str(s) == "openai:org/model@v2@http://127.0.0.1:8000/v1"
    assert parse_model_spec(str(s)) == s


@pytest.mark.parametrize(("text", "needle"), [
    ("gpt-4o", "unknown model spec"),
    ("", "unknown model spec"),
    ("HuggingFaceTB/SmolLM2-135M-Instruct", "hf:<hub id or path>"),
    ("hf:", "nothing after 'hf:'"),
    ("vllm:", "nothing after 'vllm:'"),
    ("openai:gpt-4o", "openai:<model>@"),
    ("openai:gpt-4o@localhost:8000/v1", "openai:<model>@"),
    ("openai:@http://x/v1", "openai:<model>@"),
    ("ollama:llama3", "unknown model spec"),
])
def test_bad_specs_name_the_accepted_forms(text, needle):
    with pytest.raises(SpecError, match="expected|nothing after") as e:
        parse_model_spec(text)
    assert needle in str(e.value)


def test_hub_id_not_in_cache_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("SAFETHINK_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(SpecError) as e:
        load_model("hf:safethink-test/not-a-real-model")
    msg = str(e.value)
    assert "not in the local Hugging Face cache" in msg
    assert "hf download safethink-test/not-a-real-model" in msg and "SAFETHINK_ALLOW_DOWNLOAD=1" in msg


def test_local_path_errors(tmp_path):
    with pytest.raises(SpecError, match="no such model directory"):
        load_model(f"hf:{tmp_path}/missing")
    (tmp_path / "weights.bin").write_text("x")
    with pytest.raises(SpecError, match="expected a model directory"):
        load_model(f"hf:{tmp_path}/weights.bin")
    with pytest.raises(SpecError, match="no config.json"):
        load_model(f"hf:{tmp_path}")


def test_adapter_is_refused_for_remote_backends(tmp_path):
    with pytest.raises(SpecError, match="--adapter works with local models"):
        load_model("openai:m@http://127.0.0.1:9/v1", adapter=str(tmp_path))


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_vllm_missing_extra_names_the_extra():
    with pytest.raises(MissingExtraError, match=r"pip install 'safethink\[vllm\]'"):
        load_model("vllm:HuggingFaceTB/SmolLM2-135M-Instruct")


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is not None, reason="llama-cpp-python is installed")
def test_llamacpp_missing_extra_names_the_extra():
    from safethink.models._bundled import bundled_gguf_path

    with pytest.raises(MissingExtraError, match=r"pip install 'safethink\[llamacpp\]'"):
        load_model(f"llamacpp:{bundled_gguf_path()}")


def test_llamacpp_missing_file(tmp_path):
    with pytest.raises(SpecError, match="no such GGUF file"):
        load_model(f"llamacpp:{tmp_path}/nope.gguf")


def test_post_hoc_hook_replay_cuts_where_a_live_hook_would():
    seen = []

    def hook(ev):
        seen.append((ev.token_id, ev.piece, list(ev.generated)))
        return ev.token_id == 30

    assert replay_hook(hook, 2, [10, 20, 30, 40], eos=[99], piece=str) == 3
    assert seen == [(10, "10", [10]), (20, "20", [10, 20]), (30, "30", [10, 20, 30])]
    assert replay_hook(lambda ev: False, 0, [10, 99], eos=[99], piece=str) is None
