"""A request nobody waits for any more stops generating: timed out, or its client disconnected.

Real servers on 127.0.0.1 in front of the tiny transformers model (scripted, each decoding step
slowed to stand in for a bigger model, every step counted by a forward hook), and the batcher on
its own with a fake model that counts the tokens it shows the hook, row by row.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from test_guard_scripted import Scripted, make_r2d_model
from test_serve_openai import serving

from safethink.guard import GUARDS
from safethink.models import Completion, GenerationConfig, TokenEvent
from safethink.serve import GenerationCancelled, MicroBatcher, create_app

pytestmark = pytest.mark.timeout(180)

STEP_S = 0.005
"""Added to every decoding step of the tiny model: a 1900-token answer then takes at least 9.5 s."""
LONG = 1900
SHORT_ANSWER = "<think> ok [SAFE] </think> [SAFE] short answer [SAFE]"


class StepCounter:
    """A forward hook on the tiny model: counts decoding steps and makes each take ``STEP_S`` longer."""

    def __init__(self):
        self.steps = 0

    def __call__(self, module, args, kwargs, output):
        self.steps += 1
        time.sleep(STEP_S)
        return output

    def settled(self, quiet_s: float = 0.4, within_s: float = 10.0) -> int:
        """The step count once it has not moved for ``quiet_s`` (fails if it keeps moving)."""
        deadline = time.monotonic() + within_s
        last = self.steps
        while time.monotonic() < deadline:
            time.sleep(quiet_s)
            if self.steps == last:
                return last
            last = self.steps
        raise AssertionError("the model is still decoding")


@pytest.fixture(scope="module")
def slow_model(tiny_dir):
    model = make_r2d_model(tiny_dir)
    counter = StepCounter()
    handle = model.model.register_forward_hook(counter, with_kwargs=True)
    script = Scripted(model, lambda p, c: SHORT_ANSWER if "short" in p else "word " * 2500)
    with script.active():
        yield model, counter
    handle.remove()


def post(url: str, content: str, max_tokens: int, **kw):
    return httpx.post(f"{url}/v1/chat/completions", timeout=kw.pop("timeout", 120),
                      json={"model": "tiny", "messages": [{"role": "user", "content": content}],
                            "max_tokens": max_tokens, **kw})


def wait_for(predicate, within_s: float = 10.0) -> float:
    """Seconds until ``predicate()`` holds (fails after ``within_s``)."""
    t0 = time.monotonic()
    while not predicate():
        assert time.monotonic() - t0 < within_s, "condition not reached"
        time.sleep(0.01)
    return time.monotonic() - t0


@pytest.mark.parametrize("guard", ["r2d", "self-reminder"])  # self-reminder rewrites the conversations
def test_a_burst_of_timed_out_requests_stops_and_the_next_request_is_answered_at_once(slow_model, guard):
    model, counter = slow_model
    app = create_app(model, GUARDS.create(guard), model_name="tiny", timeout_s=0.5, max_tokens_limit=4096)
    with serving(app) as url:
        health = lambda: httpx.get(f"{url}/health").json()  # noqa: E731
        start = counter.steps
        with ThreadPoolExecutor(4) as pool:
            burst = list(pool.map(lambda _: post(url, "long please", LONG), range(4)))
        assert [r.status_code for r in burst] == [504] * 4
        assert all(r.json()["error"]["code"] == "timeout" for r in burst)
        t0 = time.monotonic()
        r = post(url, "short please", 32)
        answered_s = time.monotonic() - t0
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"].endswith("short answer")  # self-reminder keeps "ok"
        # one long generation takes >= LONG * STEP_S = 9.5 s; the short answer came long before it could end
        assert answered_s < 3.0, answered_s
        steps = counter.settled() - start
        assert steps < LONG // 4, f"{steps} decoding steps: the timed-out generation went on"
        h = health()
        assert h["in_flight"] == 0 and h["stopped"] + h["cancelled"] >= 4


def test_a_client_that_disconnects_stops_its_generation(slow_model):
    model, counter = slow_model
    app = create_app(model, "r2d-pivot", model_name="tiny", timeout_s=120, max_tokens_limit=4096)
    with serving(app) as url:
        start = counter.steps
        with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
            post(url, "long please", LONG, stream=True, timeout=httpx.Timeout(10, read=0.6))
        gone_at = counter.steps
        stopped = counter.settled()
        assert stopped - gone_at < 40, f"{stopped - gone_at} steps after the client left"
        assert stopped - start < LONG // 4
        h = httpx.get(f"{url}/health").json()
        assert h["in_flight"] == 0 and h["stopped"] == 1
        r = post(url, "short please", 32)  # the server goes on answering
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "short answer"


class Ticking:
    """A fake backend that decodes one token every 2 ms for every live row, shows each to the hook and
    counts them per conversation (by its text). ``hook_mode="post-hoc"`` ignores the hook while decoding,
    as vLLM does."""

    spec = "fake"

    def __init__(self, hook_mode: str = "live", step_s: float = 0.002):
        self.hook_mode, self.step_s = hook_mode, step_s
        self.tokens: Counter[str] = Counter()
        self.lock = threading.Lock()

    def generate(self, conversations, config=GenerationConfig(), *, prefixes=None, hook=None, progress=None):
        names = [c[-1]["content"] for c in conversations]
        live, reasons = set(range(len(conversations))), ["length"] * len(conversations)
        for _ in range(config.max_new_tokens):
            if not live:
                break
            time.sleep(self.step_s)
            for row in sorted(live):
                with self.lock:
                    self.tokens[names[row]] += 1
                if hook is not None and self.hook_mode == "live" and hook(TokenEvent(row=row, token_id=None, piece=" x")):
                    live.discard(row)
                    reasons[row] = "hook"
        return [Completion(text=f"answer to {n}", finish_reason=r, completion_tokens=self.tokens[n])
                for n, r in zip(names, reasons)]

    def close(self):
        pass


def user(text):
    return [{"role": "user", "content": text}]


def test_the_batcher_halts_a_stopped_row_and_lets_the_rest_of_its_batch_finish():
    model = Ticking()
    batcher = MicroBatcher(model, GUARDS.create("none"), max_batch=2, window_s=0.2)
    cfg = GenerationConfig(max_new_tokens=400)
    try:
        a, b = batcher.submit(user("a"), cfg), batcher.submit(user("b"), cfg)
        wait_for(lambda: model.tokens["a"] > 5)
        assert batcher.cancel(a) is False  # running: it stops at the next step, its future resolves later
        assert b.result(timeout=30).text == "answer to b"
        assert model.tokens["b"] == 400 and model.tokens["a"] < 100
        wait_for(lambda: batcher.in_flight == 0)  # a's future resolved with the batch
        assert a.done() and batcher.stats.stopped == 1
    finally:
        batcher.close()


@pytest.mark.parametrize("guard", ["none", "r2d-pivot", "self-reminder"])
def test_stopping_every_request_of_a_batch_ends_it_at_the_next_step(guard):
    model = Ticking()
    batcher = MicroBatcher(model, GUARDS.create(guard), max_batch=3, window_s=0.2)
    cfg = GenerationConfig(max_new_tokens=5000)  # 10 s if nothing stopped it
    try:
        futures = [batcher.submit(user(n), cfg) for n in "abc"]
        wait_for(lambda: sum(model.tokens.values()) > 10)
        assert batcher.in_flight == 3
        for f in futures:
            batcher.cancel(f)
        t = wait_for(lambda: batcher.in_flight == 0, within_s=5)
        assert t < 1.0
        for f in futures:
            with pytest.raises(GenerationCancelled):
                f.result(timeout=1)
        assert max(model.tokens.values()) < 1000 and batcher.stats.stopped == 3
    finally:
        batcher.close()


def test_a_queued_request_is_dropped_before_it_runs():
    model = Ticking()
    batcher = MicroBatcher(model, GUARDS.create("none"), max_batch=1, window_s=0.0)
    try:
        first = batcher.submit(user("first"), GenerationConfig(max_new_tokens=100))
        queued = batcher.submit(user("queued"), GenerationConfig(max_new_tokens=100))
        assert batcher.cancel(queued) is True and queued.cancelled()
        assert first.result(timeout=10).text == "answer to first"
        assert model.tokens["queued"] == 0 and batcher.stats.cancelled == 1
    finally:
        batcher.close()


def test_the_concurrency_limit_counts_generation_that_has_not_stopped_yet():
    """A backend that cannot be halted mid-generation (hooks applied afterwards, as vLLM's): the timed-out
    request keeps its place against max_concurrency until its generation really ends."""
    model = Ticking(hook_mode="post-hoc", step_s=0.01)
    app = create_app(model, "none", model_name="tiny", timeout_s=0.3, max_concurrency=1, max_batch=1)
    with serving(app) as url:
        assert post(url, "slow", 150).status_code == 504  # 150 steps of 10 ms: 1.5 s
        busy = post(url, "next", 5)
        assert busy.status_code == 429 and busy.json()["error"]["type"] == "rate_limit_error"
        assert httpx.get(f"{url}/health").json()["in_flight"] == 1
        wait_for(lambda: httpx.get(f"{url}/health").json()["in_flight"] == 0)
        assert model.tokens["slow"] == 150  # it ran to the end: nothing could stop it sooner
        r = post(url, "next", 5)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "answer to next"
