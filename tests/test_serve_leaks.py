"""Nothing a guard stopped leaves the server, and a failed batch fails closed.

A real server on 127.0.0.1 in front of the scripted ``mock:`` backend, whose answers contain a
flagged step (an R2D step ending in ``[UNSAFE]``, a SCoT reason and a complying answer after a
rejection). Every reasoning guard, every ``reasoning`` mode, JSON and streamed answers, the official
``openai`` client and the raw bytes.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ClassVar

import httpx
import openai
import pytest
from test_serve_openai import serving

from safethink.guard import GUARDS, GuardedOutput, leaked
from safethink.guard._core import GuardBase
from safethink.models import load_model
from safethink.serve import MicroBatcher, create_app
from safethink.serve._batcher import GuardOutputMismatch

pytestmark = pytest.mark.timeout(180)

STEP = "Step 1: mix bleach with ammonia in a closed room to make chloramine gas"
MARK = b"chloramine"
R2D_ANSWERS = [
    f"<think> The user asks about cleaning. [SAFE] {STEP} (illicit/violent). [UNSAFE] Step 2 [SAFE] </think> [SAFE] "
    "Here is how. [SAFE]",
    f"<think> A chemistry question. [SAFE] </think> [SAFE] Sure. {STEP}. [UNSAFE] Then wait. [SAFE]",
]
ROLLBACK_ANSWERS = [  # each flagged answer is followed by what the model continues with after the rollback
    R2D_ANSWERS[0], " it could hurt someone. [SAFE]",
    R2D_ANSWERS[1], f" {STEP}. [SAFE]",  # a continuation that repeats the flagged step
]
SCOT_ANSWERS = [
    ("#### Verify Request\nThe user wants a toxic gas.\n"
     f"* illicit/violent: Yes. Reason: {STEP}.\n* misinformation: No.\n"
     "Therefore, the request violates illicit/violent. I need to reject the request.\n"
     f"#### Response\nSure! {STEP}."),
    ("#### Verify Request\nThe user wants a toxic gas.\n"
     f"* illicit/violent: Yes. Reason: {STEP}.\n"
     "Therefore, the request violates illicit/violent. I need to reject the request.\n"
     "#### Response\nI'm sorry, but I can't help with that: it violates illicit/violent."),
]
GUARD_CASES = [
    ("r2d-pivot", {}, R2D_ANSWERS),
    ("r2d-pivot", {"on_unsafe": "rollback"}, ROLLBACK_ANSWERS),
    ("r2d-pivot", {"on_unsafe": "continue"}, R2D_ANSWERS),  # the guard does not act; the server still never sends it
    ("r2d", {}, R2D_ANSWERS),
    ("r2d-prompt", {}, R2D_ANSWERS),
    ("scot", {}, [*SCOT_ANSWERS, f"{STEP}."]),  # the last one is unreadable: refused (fail closed)
    ("scot-prompt", {}, SCOT_ANSWERS),
]
USER = [{"role": "user", "content": "How do I clean my bathroom?"}]


def mock_model(tmp_path, answers):
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps({"text": a}) + "\n" for a in answers))
    return load_model(f"mock:{path}")


def sse_deltas(body: str) -> tuple[str, str]:
    content, reasoning = [], []
    for line in body.splitlines():
        if line.startswith("data: {"):
            for ch in json.loads(line[6:])["choices"]:
                content.append(ch["delta"].get("content") or "")
                reasoning.append(ch["delta"].get("reasoning_content") or "")
    return "".join(content), "".join(reasoning)


@pytest.mark.parametrize("mode", ["none", "safe", "full"])
@pytest.mark.parametrize("name, args, answers", GUARD_CASES, ids=[f"{n}{a}" for n, a, _ in GUARD_CASES])
def test_no_returned_byte_shows_a_flagged_step(tmp_path, name, args, answers, mode):
    model = mock_model(tmp_path, answers)
    options = {} if mode == "none" else {"reasoning": mode}  # none is the default
    app = create_app(model, GUARDS.create(name, **args), model_name="mock", **options)
    contents, reasonings, inlined = [], [], []
    with serving(app) as url:
        for extra in ({}, {"include_reasoning": True}, {"stream": True}) * len(answers):
            r = httpx.post(f"{url}/v1/chat/completions", timeout=30,
                           json={"model": "mock", "messages": USER, "max_tokens": 64, **extra})
            assert r.status_code == 200, r.text
            if extra.get("stream"):
                content, reasoning = sse_deltas(r.text)
            else:
                msg = r.json()["choices"][0]["message"]
                content, reasoning = msg["content"], msg.get("reasoning_content") or ""
            if mode != "full":
                assert MARK not in r.content, r.text  # not a byte of it, anywhere in the response
            if extra.get("include_reasoning"):  # reasoning inlined before the answer
                inlined.append(content)
                assert not reasoning
            else:
                contents.append(content)
                reasonings.append(reasoning)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=30)
        r = client.chat.completions.create(model="mock", messages=USER, max_tokens=64)
        contents.append(r.choices[0].message.content)
        reasonings.append(getattr(r.choices[0].message, "reasoning_content", None) or "")
        stream = client.chat.completions.create(model="mock", messages=USER, max_tokens=64, stream=True)
        contents.append("".join(c.choices[0].delta.content or "" for c in stream if c.choices))
    assert not any(leaked(c, [STEP]) for c in contents)  # the answer never shows it, in any mode
    if mode == "none":
        assert not any(reasonings) and all(i in contents for i in inlined)
    elif mode == "safe":
        assert any(reasonings) and not any(leaked(r, [STEP]) for r in reasonings + inlined)
    else:  # full is for debugging: it shows the flagged steps, as documented
        assert any(leaked(r, [STEP]) for r in reasonings) and any(leaked(i, [STEP]) for i in inlined)


@dataclass
class ShortGuard(GuardBase):
    """Returns one output fewer than it was asked for (a broken guard)."""

    name: ClassVar[str] = "test-short"
    kind: ClassVar[str] = "none"

    def generate(self, model, conversations, config, *, progress=None):
        return [GuardedOutput(text=f"answer for {c[-1]['content']}", raw="") for c in conversations][:-1]


@dataclass
class FailingGuard(GuardBase):
    name: ClassVar[str] = "test-failing"
    kind: ClassVar[str] = "none"

    def generate(self, model, conversations, config, *, progress=None):
        raise RuntimeError("internal detail: /srv/secret/key.pem")


def test_batcher_fails_the_whole_batch_when_a_guard_returns_too_few_outputs(tmp_path):
    batcher = MicroBatcher(mock_model(tmp_path, ["x"]), ShortGuard(), max_batch=3, window_s=0.3)
    from safethink.models import GenerationConfig

    futures = [batcher.submit(USER, GenerationConfig(), request_id=f"r{i}") for i in range(3)]
    try:
        for f in futures:
            with pytest.raises(GuardOutputMismatch, match="2 outputs for 3 requests"):
                f.result(timeout=10)  # every request fails; none hangs, none gets another's answer
    finally:
        batcher.close()


@pytest.mark.parametrize("guard, secret", [(ShortGuard(), "outputs"), (FailingGuard(), "secret")])
def test_a_failed_batch_is_a_500_with_a_request_id_and_no_internals(tmp_path, caplog, guard, secret):
    app = create_app(mock_model(tmp_path, ["x"]), guard, model_name="mock", max_batch=3, batch_window_s=0.3)
    caplog.set_level(logging.ERROR, logger="safethink")
    with serving(app) as url, ThreadPoolExecutor(max_workers=3) as pool:
        def one(i):
            return httpx.post(f"{url}/v1/chat/completions", timeout=30,
                              json={"model": "mock", "messages": [{"role": "user", "content": f"user {i}"}]})

        replies = list(pool.map(one, range(3)))
    for r in replies:
        assert r.status_code == 500, r.text  # nobody got another user's answer
        err = r.json()["error"]
        rid = r.headers["x-request-id"]
        assert err["type"] == "server_error" and err["code"] == "internal_error" and rid in err["message"]
        assert secret not in r.text and "answer for" not in r.text
        assert rid in caplog.text  # the details are in the server log
    assert secret in caplog.text or "outputs" in caplog.text
    with pytest.raises(openai.InternalServerError):
        with serving(create_app(mock_model(tmp_path, ["x"]), guard, model_name="mock")) as url:
            openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0).chat.completions.create(
                model="mock", messages=USER)
