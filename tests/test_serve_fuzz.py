"""Property-based fuzzing of ``POST /v1/chat/completions``: no body, however malformed, gets a 5xx, and
every 4xx is an OpenAI-style JSON error.

A real server on 127.0.0.1 in front of the scripted ``mock:`` backend behind the ``r2d-pivot`` guard.
Bodies are valid requests with fields replaced by arbitrary JSON (wrong types, huge integers, NaN,
lone surrogates, nesting), arbitrary JSON documents, deep nesting, and arbitrary bytes.
"""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_serve_openai import serving

from safethink.models import load_model
from safethink.serve import create_app

pytestmark = pytest.mark.timeout(120)

ANSWER = "<think> A greeting. [SAFE] </think> [SAFE] Hello! [SAFE]"
VALID = {"model": "mock", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
FIELDS = ["model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "seed", "n",
          "stream", "stream_options", "include_reasoning", "tools"]

text = st.text(max_size=12) | st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3)  # lone surrogates
scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**80), max_value=2**80)
           | st.floats() | text)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(text, inner, max_size=4), max_leaves=12)
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "developer", "x"]),
                                           "content": json_values}), max_size=3)


@st.composite
def mutated_requests(draw) -> bytes:
    body = dict(VALID)
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True)):
        if draw(st.booleans()):
            body.pop(name, None)
        else:
            body[name] = draw(messages if name == "messages" and draw(st.booleans()) else json_values)
    body.update(draw(st.dictionaries(text, json_values, max_size=2)))
    return json.dumps(body).encode()


def nested(depth: int) -> bytes:
    return b'{"model": "mock", "messages": [{"role": "user", "content": "hi"}], "x": ' + b"[" * depth + b"]" * depth + b"}"


bodies = (mutated_requests()
          | json_values.map(lambda v: json.dumps(v).encode())
          | st.integers(min_value=1, max_value=3000).map(nested)
          | st.binary(max_size=64))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    answers = tmp_path_factory.mktemp("fuzz") / "answers.jsonl"
    answers.write_text(json.dumps({"text": ANSWER}) + "\n")
    app = create_app(load_model(f"mock:{answers}"), "r2d-pivot", model_name="mock", batch_window_s=0.0)
    with serving(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        yield client


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_no_malformed_body_gets_a_5xx_and_every_4xx_is_an_openai_error(server, body):
    r = server.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    event(f"status {r.status_code}")
    assert r.status_code < 500, (r.status_code, r.text)
    if r.status_code >= 400:
        err = r.json()["error"]
        assert isinstance(err["message"], str) and err["message"]
        assert isinstance(err["type"], str) and "param" in err and "code" in err
    else:
        assert r.status_code == 200
        if r.headers["content-type"].startswith("text/event-stream"):
            assert r.text.endswith("data: [DONE]\n\n")
        else:
            assert r.json()["object"] == "chat.completion"
