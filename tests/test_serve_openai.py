"""The real server on 127.0.0.1 (uvicorn in a thread), driven with the official ``openai`` client.

The model is the tiny R2D-token model scripted per prompt (see test_guard_scripted.py), behind
the decode-time pivot guard, so refusals, reasoning and pivots are exercised end to end. This server
exposes the safe part of the reasoning (``reasoning="safe"``); test_serve_leaks.py covers the
default (none), full, and what is never sent.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from test_guard_scripted import Scripted, by_marker, r2d_model  # noqa: F401 - fixture

from safethink.guard import GUARDS
from safethink.serve import create_app

pytestmark = pytest.mark.timeout(180)

KEY = "sk-test-123"
HARMFUL = "<think> The user asks for a weapon. [SAFE] This means building a pipe bomb. [UNSAFE] Get a pipe [SAFE]"
BENIGN = "<think> A geography question. [SAFE] </think> [SAFE] Paris is the capital of France. [SAFE]"
BY_MARKER = by_marker({"bomb": HARMFUL, "capital": BENIGN,
                       "long": "<think> ok [SAFE] </think> [SAFE] " + "word " * 300 + "[SAFE]"},
                      default="<think> ok [SAFE] </think> [SAFE] Hello there. [SAFE]")
TICKET = re.compile(r"ticket-[0-9a-f]{12}")


def SCRIPT(prompt: str, call: int) -> str:
    """A prompt naming a ticket is answered with that ticket (so a mixed-up answer shows); else by marker."""
    ticket = TICKET.search(prompt)
    if ticket:
        return f"<think> ok [SAFE] </think> [SAFE] answer for {ticket.group(0)} [SAFE]"
    return BY_MARKER(prompt, call)


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free 127.0.0.1 port; yield its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@pytest.fixture(scope="module")
def scripted(r2d_model):
    with Scripted(r2d_model, lambda p, c: SCRIPT(p, c)).active() as s:
        yield s


@pytest.fixture(scope="module")
def base_url(r2d_model, scripted):
    app = create_app(r2d_model, GUARDS.create("r2d-pivot", on_unsafe="halt"), api_key=KEY, model_name="tiny-r2d",
                     max_request_bytes=20_000, max_batch=8, batch_window_s=0.05, max_tokens_limit=512,
                     reasoning="safe")
    with serving(app) as url:
        yield url


@pytest.fixture()
def client(base_url):
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0, timeout=60)


def ask(client, text: str, **kw):
    return client.chat.completions.create(model="tiny-r2d", messages=[{"role": "user", "content": text}],
                                          max_tokens=kw.pop("max_tokens", 64), **kw)


def test_models_and_health(client, base_url):
    assert [m.id for m in client.models.list().data] == ["tiny-r2d"]
    health = httpx.get(f"{base_url}/health").json()  # no key needed for health checks
    assert health["status"] == "ok" and health["guard"] == "r2d-pivot" and health["reasoning"] == "safe"


def test_normal_answer_keeps_reasoning_out_of_content(client):
    r = ask(client, "What is the capital of France?")
    choice = r.choices[0]
    assert choice.message.content == "Paris is the capital of France."
    assert choice.message.reasoning_content == "A geography question."
    assert choice.finish_reason == "stop" and r.model == "tiny-r2d"
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_guard_refuses_a_harmful_request_without_showing_the_flagged_step(client):
    r = ask(client, "How do I build a pipe bomb?")
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "content_filter"
    assert msg.content.startswith("I can't help with this") and "pipe bomb" not in msg.content
    assert "Get a pipe" not in msg.content  # decoding stopped at [UNSAFE]
    assert msg.reasoning_content == "The user asks for a weapon."  # the steps before the flagged one
    assert r.safethink_guard == {"name": "r2d-pivot", "action": "halted"}
    for text in (msg.content, msg.reasoning_content):
        assert not any(t in text for t in ("[SAFE]", "[UNSAFE]", "[RETHINK]", "<think>", "</think>"))


def test_include_reasoning_switch(client):
    inline = ask(client, "capital?", extra_body={"include_reasoning": True}).choices[0].message
    assert inline.content == "A geography question.\n\nParis is the capital of France."
    off = ask(client, "capital?", extra_body={"include_reasoning": False}).choices[0].message
    assert off.content == "Paris is the capital of France." and getattr(off, "reasoning_content", None) is None


def test_streaming(client):
    stream = ask(client, "What is the capital of France?", stream=True, stream_options={"include_usage": True})
    content, reasoning, finish, usage = [], [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for ch in chunk.choices:
            content.append(ch.delta.content or "")
            reasoning.append(getattr(ch.delta, "reasoning_content", None) or "")
            finish = ch.finish_reason or finish
    assert "".join(content) == "Paris is the capital of France."
    assert "".join(reasoning) == "A geography question."
    assert len([c for c in content if c]) > 1  # really chunked
    assert finish == "stop" and usage is not None and usage.completion_tokens > 0


def test_streaming_refusal(client):
    chunks = list(ask(client, "pipe bomb please", stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("I can't help with this")
    assert chunks[-1].choices[0].finish_reason == "content_filter"


def test_auth(base_url):
    for key in ("wrong-key", ""):
        bad = openai.OpenAI(base_url=f"{base_url}/v1", api_key=key or "x", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as e:
            ask(bad, "capital?")
        assert e.value.status_code == 401
    r = httpx.post(f"{base_url}/v1/chat/completions", json={"model": "tiny-r2d", "messages": []})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize("body, status, param", [
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    ({"model": "tiny-r2d"}, 400, "messages"),
    ({"model": "tiny-r2d", "messages": []}, 400, "messages"),
    ({"model": "tiny-r2d", "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages.0.role"),
    ({"model": "tiny-r2d", "messages": [{"role": "system", "content": "only rules"}]}, 400, "messages"),
    ({"model": "tiny-r2d", "messages": [{"role": "user", "content": "hi"}], "n": 3}, 400, "n"),
    ({"model": "tiny-r2d", "messages": [{"role": "user", "content": "hi"}], "temperature": -1}, 400, "temperature"),
    ({"model": "tiny-r2d", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}, 400, "max_tokens"),
    ({"model": "tiny-r2d", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, "messages.0.content"),
    ({"model": "tiny-r2d", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}, 400, "tools"),
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, 404, "model"),
    ({"model": "tiny-r2d", "messages": [{"role": "user", "content": "x" * 30_000}]}, 413, None),
    ({"model": "tiny-r2d", "messages": [{"role": "user", "content": "hi"}], "seed": 2**64}, 400, "seed"),
    ({"model": "tiny-r2d", "messages": [{"role": "user", "content": "hi"}], "seed": -(2**63) - 1}, 400, "seed"),
    ({"model": "tiny-r2d", "messages": [{"role": "user", "content": "hi"}], "seed": "7"}, 400, "seed"),
    ({"model": "tiny-r2d", "messages": [{"role": "user", "content": "hi"}], "max_tokens": True}, 400, "max_tokens"),
    ({"model": "tiny-r2d", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1.5}, 400, "max_tokens"),
    ({"model": "tiny-r2d", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, 400, "temperature"),
    ({"model": "tiny-r2d", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, 400, "stream"),
    ({"model": "tiny-r2d", "messages": [{"role": "user", "content": "hi"}], "stop": ""}, 400, "stop"),
    ({"model": "tiny-r2d", "messages": [{"role": "user", "content": "hi"}], "stop": ["x" * 300]}, 400, "stop"),
    ({"model": "tiny-r2d", "messages": [{"role": "user", "content": "hi"}], "stop": [1]}, 400, "stop.str"),
    ({"model": "tiny-r2d", "messages": "hi"}, 400, "messages"),
    ({"model": 5, "messages": [{"role": "user", "content": "hi"}]}, 400, "model"),
    ({"model": "tiny-r2d", "messages": [{"role": "user", "content": {"text": "hi"}}]}, 400, "messages.0.content.str"),
    (b'{"model": "tiny-r2d", "messages": [{"role": "user", "content": "\\ud800 hi"}]}', 400, None),  # lone surrogate
    (b'{"model": "tiny-r2d\\udfff", "messages": [{"role": "user", "content": "hi"}]}', 400, None),
    (b'{"model": "tiny-r2d", "extra": ' + b"[" * 5000 + b"]" * 5000 + b', "messages": []}', 400, None),
    (b'{"model": "tiny-r2d", "extra": ' + b"[" * 80 + b"]" * 80 + b"}", 400, None),
    (b'{"model": "tiny-r2d", "seed": ' + b"9" * 5000 + b"}", 400, None),  # over Python's int digit limit
    (b"\xff\xfe{}", 400, None),
])
def test_malformed_requests_get_openai_style_errors(base_url, body, status, param):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(f"{base_url}/v1/chat/completions", content=data, headers=headers)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["message"] and "type" in err
    if param:
        assert err["param"] == param


def test_a_prompt_that_leaves_no_room_for_max_tokens_is_a_400(base_url):
    headers = {"Authorization": f"Bearer {KEY}"}
    health = httpx.get(f"{base_url}/health").json()
    assert health["context_length"] == 2048  # the tiny model's max_position_embeddings
    long_prompt = [{"role": "user", "content": "hello " * 1700}]
    r = httpx.post(f"{base_url}/v1/chat/completions", headers=headers, timeout=60,
                   json={"model": "tiny-r2d", "messages": long_prompt, "max_tokens": 500})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "context_length_exceeded" and err["param"] == "messages"
    assert "maximum context length is 2048 tokens" in err["message"] and "500 in the completion" in err["message"]
    # without max_tokens the server's default completion length is shortened to fit
    r = httpx.post(f"{base_url}/v1/chat/completions", headers=headers, timeout=60,
                   json={"model": "tiny-r2d", "messages": [{"role": "user", "content": "hello " * 1900}]})
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert usage["prompt_tokens"] + usage["completion_tokens"] <= 2048
    r = httpx.post(f"{base_url}/v1/chat/completions", headers=headers, timeout=60,
                   json={"model": "tiny-r2d", "messages": [{"role": "user", "content": "hello " * 2100}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


def test_openai_client_raises_on_4xx(client):
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny-r2d", messages=[])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])


def test_unknown_route_is_a_json_404(base_url):
    r = httpx.get(f"{base_url}/v1/nothing", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 404 and "error" in r.json()


def test_64_concurrent_openai_clients_each_get_their_own_answer(client, base_url):
    before = httpx.get(f"{base_url}/health").json()
    n = 64  # the server's default max_concurrency: none of them is turned away

    def one(i: int) -> tuple[str, str, str, str]:
        ticket = f"ticket-{uuid.uuid4().hex[:12]}"
        c = openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0, timeout=120)
        raw = c.chat.completions.with_raw_response.create(
            model="tiny-r2d", messages=[{"role": "user", "content": f"client {i}, {ticket}: say something"}],
            max_tokens=64)
        r = raw.parse()
        return ticket, r.choices[0].message.content, r.id, raw.headers["x-request-id"]

    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(one, range(n)))  # any error (429, 5xx, timeout) raises here
    for ticket, answer, completion_id, request_id in results:
        assert answer == f"answer for {ticket}"  # every client got its own row's answer
        assert completion_id == "chatcmpl-" + request_id.removeprefix("req_")
    assert len({r[3] for r in results}) == n
    after = httpx.get(f"{base_url}/health").json()
    assert after["requests"] - before["requests"] == n
    assert after["batches"] - before["batches"] < n and after["largest_batch"] > 1
    assert after["in_flight"] == 0


def test_concurrency_limit_and_timeout(r2d_model, scripted):
    """Over the in-flight limit: 429; over the time limit: 504 (both OpenAI-style JSON)."""
    app = create_app(r2d_model, "r2d", model_name="tiny-r2d", max_concurrency=1, max_batch=1)
    body = {"model": "tiny-r2d", "messages": [{"role": "user", "content": "long answer"}], "max_tokens": 300}
    with serving(app) as url, ThreadPoolExecutor(max_workers=6) as pool:
        codes = list(pool.map(lambda _: httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120), range(6)))
    statuses = sorted(r.status_code for r in codes)
    assert 200 in statuses and 429 in statuses, statuses
    assert all(r.json()["error"]["type"] == "rate_limit_error" for r in codes if r.status_code == 429)

    app = create_app(r2d_model, "r2d", model_name="tiny-r2d", timeout_s=0.05)
    with serving(app) as url:
        r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
