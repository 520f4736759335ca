"""The OpenAI-compatible backend against a real HTTP server on 127.0.0.1.

The server is a small scripted chat-completions endpoint (http.server in a thread). It answers
``echo: <last user message>`` (or continues a prefilled assistant message), can be told to fail
the next requests with given statuses or to stall, and records every request, the attempts and
the largest number of requests it had in flight at once.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from safethink.errors import BackendError
from safethink.models import GenerationConfig, TokenEvent
from safethink.models._http import retry_after_s
from safethink.models._openai import OpenAIChatModel

pytestmark = pytest.mark.timeout(60)


def answer_for(body: dict) -> str:
    msgs = body["messages"]
    if msgs[-1]["role"] == "assistant" and body.get("continue_final_message"):
        return " and more"  # the continuation only, as vLLM returns it
    return "echo: " + msgs[-1]["content"]


class _Handler(BaseHTTPRequestHandler):
    server: ChatServer

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with srv.lock:
            srv.requests.append({"body": body, "headers": dict(self.headers), "t": time.monotonic()})
            srv.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
            action = srv.plan.pop(0) if srv.plan else None
        try:
            self._serve(body, action)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (timeout test, halted stream)
        finally:
            with srv.lock:
                srv.in_flight -= 1

    def _serve(self, body: dict, action):
        srv = self.server
        if self.path not in ("/v1/chat/completions", "/v1/completions"):
            return self._json(404, {"error": {"message": f"no route {self.path}"}})
        if action is not None:
            kind = action[0]
            if kind == "status":
                _, code, headers, payload = action
                return self._json(code, payload, headers)
            if kind == "raw":  # a body that is not JSON (a proxy's error page, a truncated reply)
                _, code, raw = action
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
                return
            if kind == "stall":
                time.sleep(action[1])
        time.sleep(srv.delay_s)
        if self.path == "/v1/completions":
            text = "completed: " + body["prompt"]
            return self._json(200, {"choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
                                    "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
        text = answer_for(body)
        if body.get("stream"):
            return self._stream(text, body)
        words = text.split(" ")
        data = {
            "id": "x", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 7, "completion_tokens": len(words)},
        }
        if body.get("logprobs"):
            data["choices"][0]["logprobs"] = {
                "content": [{"token": w, "logprob": -0.5 * (i + 1)} for i, w in enumerate(words)]}
        self._json(200, data)

    def _stream(self, text: str, body: dict):
        srv = self.server
        pieces = [text] if srv.stream_pieces is None else srv.stream_pieces
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for i, piece in enumerate(pieces):
            chunk = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            if body.get("logprobs"):
                chunk["choices"][0]["logprobs"] = {"content": [{"token": piece, "logprob": -1.0}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
            with srv.lock:
                srv.chunks_sent += 1
            time.sleep(srv.chunk_delay_s)
        end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        self.wfile.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())
        self.wfile.flush()
        with srv.lock:
            srv.stream_finished = True

    def _json(self, code: int, payload, headers: dict | None = None):
        raw = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.plan: list[tuple] = []  # scripted answers for the next requests, then normal ones
        self.in_flight = self.max_in_flight = 0
        self.delay_s = 0.0
        self.stream_pieces: list[str] | None = None
        self.chunk_delay_s = 0.0
        self.chunks_sent = 0
        self.stream_finished = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


@pytest.fixture
def server():
    srv = ChatServer()
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def model(srv: ChatServer, **kw) -> OpenAIChatModel:
    kw.setdefault("backoff_base_s", 0.01)
    kw.setdefault("backoff_cap_s", 2.0)
    return OpenAIChatModel("echo-model", srv.url, api_key="sk-test", **kw)


CONVS = [[{"role": "user", "content": f"question {i}"}] for i in range(5)]


def test_success_in_order_with_usage_logprobs_and_auth(server):
    outs = model(server).generate(CONVS, GenerationConfig(max_new_tokens=9, logprobs=True, seed=3))
    assert [o.text for o in outs] == [f"echo: question {i}" for i in range(5)]
    assert all(o.finish_reason == "stop" for o in outs)
    assert outs[0].logprobs == [-0.5, -1.0, -1.5] and outs[0].completion_tokens == 3
    bodies = sorted((r["body"] for r in server.requests), key=lambda b: b["messages"][0]["content"])
    assert [b["seed"] for b in bodies] == [3, 4, 5, 6, 7]  # seed + row
    assert all(b["max_tokens"] == 9 and b["temperature"] == 0 and b["model"] == "echo-model" for b in bodies)
    assert server.requests[0]["headers"]["Authorization"] == "Bearer sk-test"


@pytest.mark.parametrize("status", [429, 500, 503])
def test_retries_after_retryable_status(server, status):
    server.plan = [("status", status, {}, {"error": {"message": "busy"}})] * 2
    out = model(server).generate(CONVS[:1])
    assert out[0].text == "echo: question 0"
    assert len(server.requests) == 3  # two failures, then success


def test_retry_after_header_is_honoured(server):
    server.plan = [("status", 429, {"Retry-After": "0.6"}, {"error": {"message": "slow down"}})]
    model(server, backoff_base_s=0.0).generate(CONVS[:1])
    gap = server.requests[1]["t"] - server.requests[0]["t"]
    assert len(server.requests) == 2 and gap >= 0.55


def test_retry_after_parsing():
    assert retry_after_s({"retry-after": "2"}) == 2.0
    assert retry_after_s({"retry-after-ms": "250"}) == 0.25
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < retry_after_s({"retry-after": date}) <= 31
    assert retry_after_s({}) is None and retry_after_s({"retry-after": "soon"}) is None


def test_timeout_then_success(server):
    server.plan = [("stall", 2.0)]
    t0 = time.monotonic()
    out = model(server, timeout_s=0.4).generate(CONVS[:1])
    assert out[0].text == "echo: question 0"
    assert len(server.requests) == 2 and time.monotonic() - t0 < 1.9


def test_client_error_is_not_retried_and_names_status_and_message(server):
    msg = "This model's maximum context length is 2048 tokens"
    server.plan = [("status", 400, {}, {"object": "error", "message": msg})]
    with pytest.raises(BackendError) as e:
        model(server).generate(CONVS[:1])
    assert "400" in str(e.value) and msg in str(e.value)
    assert len(server.requests) == 1


def test_gives_up_after_max_retries(server):
    server.plan = [("status", 502, {}, {"detail": "upstream down"})] * 10
    with pytest.raises(BackendError, match="3 attempts.*502.*upstream down"):
        model(server, max_retries=2).generate(CONVS[:1])
    assert len(server.requests) == 3


def test_connection_refused_is_retried_then_reported():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    m = OpenAIChatModel("m", f"http://127.0.0.1:{port}/v1", max_retries=2, backoff_base_s=0.01)
    with pytest.raises(BackendError, match="3 attempts.*Connect"):
        m.generate(CONVS[:1])


def test_concurrency_limit_is_respected(server):
    server.delay_s = 0.4  # long enough that three requests overlap even on a loaded machine
    convs = [[{"role": "user", "content": f"q{i}"}] for i in range(12)]
    outs = model(server, max_concurrency=3).generate(convs)
    assert [o.text for o in outs] == [f"echo: q{i}" for i in range(12)]
    assert server.max_in_flight == 3


def test_batch_size_also_caps_concurrency(server):
    server.delay_s = 0.2
    model(server, max_concurrency=8).generate(CONVS[:4], GenerationConfig(batch_size=2))
    assert server.max_in_flight == 2


def test_streaming_hook_halts_mid_stream(server):
    server.stream_pieces = [f"t{i} " for i in range(40)]
    server.chunk_delay_s = 0.03
    seen: list[TokenEvent] = []

    def hook(ev: TokenEvent) -> bool:
        seen.append(ev)
        return "t3" in ev.piece

    out = model(server).generate(CONVS[:1], GenerationConfig(logprobs=True), hook=hook)[0]
    assert out.finish_reason == "hook" and out.text == "t0 t1 t2 t3 "
    assert [e.piece for e in seen] == ["t0 ", "t1 ", "t2 ", "t3 "]
    assert all(e.token_id is None and e.row == 0 for e in seen)
    assert out.logprobs == [-1.0] * 4
    deadline = time.monotonic() + 5
    while server.in_flight and time.monotonic() < deadline:  # the handler notices the hang-up
        time.sleep(0.05)
    assert not server.stream_finished and server.chunks_sent < 40


def test_streaming_without_halt_matches_plain_request(server):
    server.stream_pieces = None  # one chunk with the whole answer
    plain = model(server).generate(CONVS[:2])
    streamed = model(server).generate(CONVS[:2], hook=lambda ev: False)
    assert [o.text for o in streamed] == [o.text for o in plain]
    assert all(r["body"].get("stream") for r in server.requests[2:])


def test_prefix_sent_as_final_assistant_message(server):
    outs = model(server).generate(CONVS[:2], prefixes=["Sure,", ""])
    first = next(r["body"] for r in server.requests if r["body"]["messages"][0]["content"] == "question 0")
    assert first["messages"][-1] == {"role": "assistant", "content": "Sure,"}
    assert first["continue_final_message"] is True and first["add_generation_prompt"] is False
    second = next(r["body"] for r in server.requests if r["body"]["messages"][0]["content"] == "question 1")
    assert "continue_final_message" not in second and len(second["messages"]) == 1
    assert [o.text for o in outs] == [" and more", "echo: question 1"]


def test_plain_prefix_style_and_extra_body(server):
    model(server, prefix_style="plain", extra_body={"skip_special_tokens": False}).generate(
        CONVS[:1], prefixes=["Sure,"])
    body = server.requests[0]["body"]
    assert "continue_final_message" not in body and body["skip_special_tokens"] is False


def test_stop_strings_are_sent_and_enforced(server):
    out = model(server).generate(CONVS[:1], GenerationConfig(stop=("ques",)))[0]
    assert server.requests[0]["body"]["stop"] == ["ques"]
    assert out.text == "echo: " and out.finish_reason == "stop"  # this server ignores stop


def test_generate_inside_a_running_event_loop(server):
    async def caller():
        return model(server).generate(CONVS[:2])

    outs = asyncio.run(caller())
    assert [o.text for o in outs] == ["echo: question 0", "echo: question 1"]


def test_agenerate_and_progress(server):
    done = []
    outs = asyncio.run(model(server).agenerate(CONVS, progress=done.append))
    assert len(outs) == 5 and sum(done) == 5


def test_api_key_from_environment(server, monkeypatch):
    monkeypatch.setenv("SAFETHINK_API_KEY", "sk-env")
    OpenAIChatModel("echo-model", server.url).generate(CONVS[:1])
    assert server.requests[0]["headers"]["Authorization"] == "Bearer sk-env"
    assert "sk-env" not in repr(OpenAIChatModel("echo-model", server.url))


def test_load_model_routes_openai_specs(server):
    from safethink.models import load_model

    m = load_model(f"openai:echo-model@{server.url}", max_retries=0)
    assert isinstance(m, OpenAIChatModel) and m.spec == f"openai:echo-model@{server.url}"
    assert m.generate(CONVS[:1])[0].text == "echo: question 0"


# -- the shared client: retry policy, malformed replies, the completions route, the teacher's client --

def test_malformed_json_is_retried(server):
    server.plan = [("raw", 200, b'{"choices": [{"message": '), ("raw", 200, b"\xff\xfe not json"),
                   ("status", 200, {}, {"object": "error"})]  # cut short, not UTF-8, not the API
    out = model(server).generate(CONVS[:1])
    assert out[0].text == "echo: question 0" and len(server.requests) == 4


def test_malformed_json_through_every_retry_is_an_endpoint_error(server):
    from safethink.errors import EndpointError

    server.plan = [("raw", 200, b"<html>bad gateway</html>")] * 3
    with pytest.raises(EndpointError, match=r"/v1/chat/completions: gave up after 3 attempts.*not JSON") as e:
        model(server, max_retries=2).generate(CONVS[:1])
    assert e.value.url == server.url


@pytest.mark.parametrize("code", [401, 403, 404, 400, 422])
def test_client_errors_name_url_and_status(server, code):
    from safethink.errors import EndpointError

    server.plan = [("status", code, {}, {"error": {"message": "nope"}})]
    with pytest.raises(BackendError) as e:
        model(server).generate(CONVS[:1])
    assert f"{server.url}/chat/completions" in str(e.value) and f"HTTP {code}" in str(e.value)
    assert isinstance(e.value, EndpointError) == (code in (401, 403, 404))  # about the endpoint, not the request
    assert len(server.requests) == 1


def test_retry_after_http_date_is_honoured_and_capped(server):
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 3600))
    server.plan = [("status", 503, {"Retry-After": date}, {"error": {"message": "maintenance"}}),
                   ("status", 429, {"Retry-After": "1.2"}, {"error": {"message": "slow down"}})]
    t0 = time.monotonic()
    model(server, backoff_cap_s=0.3).generate(CONVS[:1])
    gaps = [b["t"] - a["t"] for a, b in zip(server.requests, server.requests[1:])]
    assert len(gaps) == 2 and all(0.25 <= g < 1.0 for g in gaps), gaps  # both asked for more than the cap
    assert time.monotonic() - t0 < 2


def test_409_and_408_are_retried(server):
    server.plan = [("status", 409, {}, {"error": {"message": "busy"}}), ("status", 408, {}, {})]
    assert model(server).generate(CONVS[:1])[0].text == "echo: question 0" and len(server.requests) == 3


def test_full_jitter_backoff_and_retry_after_cap():
    import random

    from safethink.models._http import RetryPolicy

    policy = RetryPolicy(backoff_base_s=0.5, backoff_cap_s=3.0)
    rng = random.Random(0)
    for attempt, ceiling in ((0, 0.5), (1, 1.0), (2, 2.0), (5, 3.0)):
        waits = [policy.delay(attempt, None, rng) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits) and min(waits) < ceiling * 0.1 and max(waits) > ceiling * 0.9
    assert policy.delay(0, 2.5, rng) == 2.5 and policy.delay(0, 60, rng) == 3.0 and policy.delay(0, -1, rng) == 0


def test_retry_settings_from_arguments_then_environment_then_defaults(monkeypatch):
    from safethink.errors import SpecError
    from safethink.models._http import RetryPolicy

    monkeypatch.setenv("SAFETHINK_HTTP_TIMEOUT_S", "2.5")
    monkeypatch.setenv("SAFETHINK_HTTP_MAX_RETRIES", "7")
    p = RetryPolicy.resolve(RetryPolicy(timeout_s=120, max_retries=3, backoff_cap_s=9), max_retries=1)
    assert (p.timeout_s, p.max_retries, p.backoff_base_s, p.backoff_cap_s) == (2.5, 1, 0.5, 9)
    m = OpenAIChatModel("m", "http://127.0.0.1:1/v1", timeout_s=4)
    assert (m.retry.timeout_s, m.retry.max_retries) == (4, 7)
    monkeypatch.setenv("SAFETHINK_HTTP_MAX_RETRIES", "many")
    with pytest.raises(SpecError, match="SAFETHINK_HTTP_MAX_RETRIES"):
        RetryPolicy.resolve()
    with pytest.raises(ValueError):
        RetryPolicy(timeout_s=0)


def test_completions_route_shares_retries_concurrency_and_order(server):
    server.plan = [("status", 500, {}, {"error": {"message": "oops"}}), ("stall", 2.0)]
    outs = model(server, timeout_s=0.4, max_concurrency=2).complete_prompts(
        ["alpha", "beta", "gamma"], GenerationConfig(max_new_tokens=5, seed=1))
    assert [o.text for o in outs] == ["completed: alpha", "completed: beta", "completed: gamma"]
    assert outs[0].prompt_tokens == 3
    bodies = [r["body"] for r in server.requests]
    assert len(bodies) == 5 and all(b["max_tokens"] == 5 and "messages" not in b for b in bodies)
    assert sorted({(b["prompt"], b["seed"]) for b in bodies}) == [("alpha", 1), ("beta", 2), ("gamma", 3)]


def test_teacher_client_shares_the_retry_policy(server):
    """The teacher's chat client is the same HTTP client: it honours Retry-After and retries stalls
    and malformed replies (it used to retry on a fixed schedule)."""
    from safethink.synth import ChatClient

    client = ChatClient("echo-model", server.url, timeout_s=0.4, backoff_base_s=0.0, backoff_cap_s=2.0)
    server.plan = [("status", 429, {"Retry-After": "0.6"}, {"error": {"message": "slow down"}}), ("stall", 2.0),
                   ("raw", 200, b"{")]
    assert client.complete([{"role": "user", "content": "hi"}]) == "echo: hi"
    assert len(server.requests) == 4 and server.requests[1]["t"] - server.requests[0]["t"] >= 0.55
    assert server.requests[0]["body"]["response_format"] == {"type": "json_object"}
    server.plan = [("status", 400, {}, {"error": {"message": "unknown field response_format"}})]
    assert client.complete([{"role": "user", "content": "again"}]) == "echo: again"  # JSON mode off, asked again
    assert "response_format" not in server.requests[-1]["body"] and client.json_mode is False
