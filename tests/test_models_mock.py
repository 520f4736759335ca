"""The scripted ``mock:<file.jsonl>`` backend: answers replayed in order, streamed to token hooks."""

from __future__ import annotations

import json

import pytest

from safethink.errors import InputError
from safethink.guard import PivotWatcher
from safethink.models import ChatModel, GenerationConfig, load_model, parse_model_spec

USER = [{"role": "user", "content": "hello there"}]


def answers(tmp_path, *lines) -> str:
    path = tmp_path / "answers.jsonl"
    path.write_text("\n".join(json.dumps(x) if isinstance(x, dict) else x for x in lines) + "\n")
    return str(path)


def test_spec_and_replay_in_order_then_from_the_start(tmp_path):
    path = answers(tmp_path, {"text": "one"}, {"text": "two"}, "", {"text": "three"})
    assert parse_model_spec(f"mock:{path}").kind == "mock"
    model = load_model(f"mock:{path}")
    assert isinstance(model, ChatModel) and model.spec == f"mock:{path}" and model.tokenizer is None
    outs = model.generate([USER, USER], GenerationConfig())
    assert [o.text for o in outs] == ["one", "two"] and all(o.finish_reason == "stop" for o in outs)
    assert [o.text for o in model.generate([USER, USER], GenerationConfig())] == ["three", "one"]
    assert model.calls[0] == [USER, USER]  # what each call was asked
    assert outs[0].prompt_tokens == 2 and outs[0].completion_tokens == 1


def test_hooks_see_each_piece_and_can_halt(tmp_path):
    model = load_model(f"mock:{answers(tmp_path, {'text': '<think> ok [SAFE] bad idea [UNSAFE] more text [SAFE]'})}")
    pieces = []
    watcher = PivotWatcher(None, frozenset({"[UNSAFE]"}))

    def hook(event):
        pieces.append(event.piece)
        return watcher(event)

    (out,) = model.generate([USER], GenerationConfig(), hook=hook)
    assert pieces == ["<think>", " ok", " ", "[SAFE]", " bad", " idea", " ", "[UNSAFE]"]
    assert out.finish_reason == "hook" and out.raw_text == "<think> ok [SAFE] bad idea [UNSAFE]"
    assert "more" not in out.text


def test_explicit_tokens_budget_stop_strings_and_prefixes(tmp_path):
    path = answers(tmp_path, {"text": "ab cd", "tokens": ["a", "b", " c", "d"]}, {"text": " go on. STOP then"})
    model = load_model(f"mock:{path}")
    (out,) = model.generate([USER], GenerationConfig(max_new_tokens=2))
    assert out.text == "ab" and out.finish_reason == "length"
    (out,) = model.generate([USER], GenerationConfig(stop=("STOP",)), prefixes=["Well,"])
    assert out.text == " go on." and out.finish_reason == "stop"  # a continuation keeps its leading space


@pytest.mark.parametrize("line, message", [
    ("{not json", "not JSON"),
    ('{"answer": "x"}', "'text'"),
    ('{"text": "ab", "tokens": ["a"]}', "join"),
    ('{"text": "ab", "finish_reason": "hook"}', "finish_reason"),
])
def test_bad_files_name_the_line(tmp_path, line, message):
    path = answers(tmp_path, {"text": "fine"}, line)
    with pytest.raises(InputError, match=message) as e:
        load_model(f"mock:{path}")
    assert "answers.jsonl:2:" in str(e.value)
    with pytest.raises(InputError, match="no such"):
        load_model(f"mock:{tmp_path / 'missing.jsonl'}")
