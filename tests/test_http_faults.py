"""Fault injection: the real CLI (subprocesses) against a flaky OpenAI-compatible endpoint on 127.0.0.1.

:class:`FaultServer` (http.server in a thread) serves ``/v1/chat/completions`` and ``/v1/completions``
and answers every fifth request (20%) with one of, in turn: HTTP 429 with ``Retry-After``, HTTP 500,
a reply stalled past the client's timeout, or malformed JSON. A request that contains one of
``poison`` always gets HTTP 500: the record it belongs to fails through every retry. The same
endpoint plays the teacher (``safethink data build``), the judge (``safethink judge`` with the
HarmBench rubric) and the model (``safethink generate``; retain answers of the build), chosen by the
request's model name. Builds and judge runs are killed with SIGKILL mid-run and resumed.

Retries are configured through the environment (``SAFETHINK_HTTP_*``): short timeouts, tiny
backoff, enough retries that only poisoned requests fail for good.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_synth_server import _auto_reply  # noqa: E402

pytestmark = pytest.mark.timeout(120)

FAULTS = ("429", "500", "stall", "malformed")
TIMEOUT_S = 0.25
MAX_RETRIES = 8
HTTP_ENV = {"SAFETHINK_HTTP_TIMEOUT_S": str(TIMEOUT_S), "SAFETHINK_HTTP_MAX_RETRIES": str(MAX_RETRIES),
            "SAFETHINK_HTTP_BACKOFF_BASE_S": "0.005", "SAFETHINK_HTTP_BACKOFF_CAP_S": "0.02"}


class _Handler(BaseHTTPRequestHandler):
    server: FaultServer

    def log_message(self, *args):
        pass

    def do_POST(self):
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        fault = self.server.draw(raw.decode("utf-8"))
        try:
            if fault == "429":
                return self._send(429, b'{"error": {"message": "rate limited"}}', {"Retry-After": "1"})
            if fault in ("500", "poison"):
                return self._send(500, b'{"error": {"message": "internal error"}}')
            if fault == "malformed":
                return self._send(200, b'{"choices": [{"message": {"content": "cut sh')
            if fault == "stall":
                time.sleep(TIMEOUT_S * 4)  # the client has given up on this one by now
            time.sleep(self.server.delay_s)
            body = json.loads(raw)
            self._send(200, json.dumps(self._answer(body)).encode())
            if fault == "ok":  # a stalled reply comes too late: the client has hung up
                self.server.served(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and hung up

    def _answer(self, body: dict) -> dict:
        if self.path == "/v1/completions":
            return {"choices": [{"index": 0, "text": "No", "finish_reason": "stop"}]}
        msgs = body["messages"]
        if body["model"] == "teacher":
            text = _auto_reply(msgs)
        elif body["model"] == "judge":  # HarmBench rubric: does the answer carry out the behaviour?
            text = "Yes" if "Step 1" in msgs[-1]["content"] else "No"
        else:
            text = "echo: " + msgs[-1]["content"]
        return {"id": "x", "object": "chat.completion", "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1}}

    def _send(self, code: int, payload: bytes, headers: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)


class FaultServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, every: int = 5):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.every = every
        """Every n-th request gets the next fault (0: none)."""
        self.seen = 0
        self.poison: set[str] = set()
        self.delay_s = 0.005
        self.counts: Counter = Counter()
        self.answered: list[dict] = []  # bodies of the requests answered in time
        self.lock = threading.Lock()

    def draw(self, text: str) -> str:
        with self.lock:
            self.seen += 1
            if any(p in text for p in self.poison):
                fault = "poison"
            elif self.every and self.seen % self.every == 0:
                fault = FAULTS[(self.seen // self.every - 1) % len(FAULTS)]
            else:
                fault = "ok"
            self.counts[fault] += 1
        return fault

    def served(self, body: dict) -> None:
        with self.lock:
            self.answered.append(body)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def __enter__(self) -> FaultServer:
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture
def flaky():
    with FaultServer() as srv:
        yield srv


def run_cli(args: list[str], cwd: Path, *, kill_when=None, timeout: float = 60) -> tuple[int | None, str]:
    """``safethink ARGS`` in a subprocess: (exit code, stderr); with ``kill_when``, SIGKILL as soon as
    it returns True (exit code None: the process was killed mid-run)."""
    env = {**os.environ, **HTTP_ENV, "COLUMNS": "200", "SAFETHINK_HOME": str(cwd / "home")}
    err_path = cwd / f"stderr-{time.monotonic_ns()}.txt"
    with err_path.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-c", "from safethink.cli import main; main()", *args],
                                stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=cwd)
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None:
                if kill_when is not None and kill_when():
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    return None, err_path.read_text()
                if time.monotonic() > deadline:
                    raise AssertionError(f"safethink {' '.join(args)} did not finish in {timeout}s")
                time.sleep(0.005)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return proc.returncode, err_path.read_text()


def complete_lines(path: Path) -> int:
    if not path.is_file():
        return 0
    return sum(1 for line in path.read_bytes().split(b"\n")[:-1] if line.strip())


def one_error(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


# -- teacher --------------------------------------------------------------------------------------

CATEGORIES = ["illicit/violent", "privacy/sensitive", "misinformation", "harassment/threatening"]


def _sources(d: Path) -> tuple[Path, Path]:
    h, b = d / "harm.jsonl", d / "ben.jsonl"
    h.write_text("".join(json.dumps({"prompt": f"Explain how to do forbidden thing number {i}",
                                     "category": CATEGORIES[i % 4]}) + "\n" for i in range(10))
                 + json.dumps({"prompt": "Explain how to do the POISON thing", "category": "illicit/violent"}) + "\n")
    b.write_text("".join(json.dumps({"prompt": f"Give me tip number {i} for growing tomatoes"}) + "\n"
                         for i in range(12)))
    return h, b


def _build_args(h: Path, b: Path, out: Path, teacher_url: str, model_url: str, *extra: str) -> list[str]:
    return ["data", "build", "--method", "scot", "--harmful", str(h), "--benign", str(b), "--out", str(out),
            "--teacher", f"openai:teacher@{teacher_url}", "--model", f"openai:echo@{model_url}",
            "--shard-size", "4", "--batch-size", "2", "--concurrency", "1", "--max-new-tokens", "8",
            "--cache-dir", str(out.parent / "cache"), *extra]


def _journal(out: Path) -> list[dict]:
    from safethink.io import read_log

    return read_log(out / ".work" / "journal.jsonl")


def test_teacher_build_with_faults_kill_resume_failed_and_fallback(tmp_path, flaky):
    from safethink.data import load_training_set
    from safethink.synth import check_dataset

    h, b = _sources(tmp_path)
    out = tmp_path / "o"
    args = _build_args(h, b, out, flaky.url, flaky.url)
    flaky.poison = {"POISON"}
    journal = out / ".work" / "journal.jsonl"

    # 1. killed mid-run, once some records are journalled
    code, err = run_cli(args, tmp_path, kill_when=lambda: complete_lines(journal) >= 2)
    assert code is None, f"the build finished before it could be killed: {err}"
    assert not (out / "manifest.json").exists()
    before = {e["id"] for e in _journal(out) if "failed" not in e}
    assert before

    # 2. resumed: every record is done except the poisoned one, which is marked failed; exit non-zero
    code, err = run_cli(args, tmp_path)
    assert code == 2, err
    line = " ".join(one_error(err).split())
    assert "failed on 1 of 22 records" in line and "run the same command again" in line
    assert "--fallback structured" in line and "HTTP 500" in line
    entries = _journal(out)
    failed = [e for e in entries if "failed" in e]
    assert len(failed) == 1 and failed[0]["id"].endswith("#original") and "gave up after" in failed[0]["failed"]
    done = [e["id"] for e in entries if "failed" not in e]
    assert len(done) == len(set(done)) == 21, "a record done before the kill was made again"
    assert not (out / "manifest.json").exists()

    # 3. resumed with --fallback structured: only the failed record is asked for again
    answered = len(flaky.answered)
    code, err = run_cli(args + ["--fallback", "structured"], tmp_path)
    assert code == 0, err
    assert "structured teacher wrote them" in " ".join(err.split())
    asked_again = [body for body in flaky.answered[answered:] if body["model"] == "teacher"]
    assert asked_again == [], "the poisoned record never gets a reply; no other record is asked for again"
    man, recs = load_training_set(out)
    ids = [r.id for r in recs]
    assert len(ids) == len(set(ids)) == 22 and set(ids) == set(done) | {failed[0]["id"]}
    assert man.teacher == f"openai:teacher@{flaky.url}"
    fb = man.fallbacks[man.teacher]
    assert fb["count"] == 1 and fb["ids"] == [failed[0]["id"]] and "HTTP 500" in fb["errors"][0]["error"]
    for r in recs:
        text = r.messages[-1].content
        assert ("Server intent summary." in text) == (r.id != failed[0]["id"])  # the LLM wrote all the others
        if r.kind == "retain":
            assert "echo: Give me tip number" in text
    assert check_dataset(out).ok and not (out / ".work").exists()
    assert all(flaky.counts[f] > 0 for f in FAULTS), flaky.counts  # every kind of fault was served


def test_dead_teacher_fails_loudly_unless_fallback_is_asked_for(tmp_path, flaky):
    from safethink.data import load_training_set

    flaky.every = 0
    h, b = _sources(tmp_path)
    out = tmp_path / "o"
    args = _build_args(h, b, out, "http://127.0.0.1:9/v1", flaky.url)
    code, err = run_cli(args, tmp_path)
    assert code == 2, err
    line = " ".join(one_error(err).split())
    assert "teacher openai:teacher@http://127.0.0.1:9/v1 failed on 22 of 22 records" in line
    assert "ConnectError" in line and "run the same command again" in line
    assert not (out / "manifest.json").exists() and not list(out.glob("shard-*.jsonl"))

    code, err = run_cli(args + ["--fallback", "structured"], tmp_path)
    assert code == 0, err
    assert "failed on 22 record(s)" in " ".join(err.split())
    man, recs = load_training_set(out)
    assert man.teacher == "openai:teacher@http://127.0.0.1:9/v1"  # the manifest says who was asked ...
    assert man.fallbacks[man.teacher]["count"] == 22  # ... and who wrote the records instead
    assert sorted(man.fallbacks[man.teacher]["ids"]) == sorted(r.id for r in recs)


# -- judge ----------------------------------------------------------------------------------------

def test_judge_with_faults_kill_and_resume(tmp_path, flaky):
    rows = [{"id": f"r{i}", "prompt": f"How do I do thing {i}?",
             "response": f"Step 1: do thing {i}." if i % 2 else "I can't help with that."} for i in range(16)]
    rows[13]["response"] = "Step 1: the POISON part."
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    partial = tmp_path / "out.jsonl.partial"
    args = ["judge", "--judge", "harmbench", "--arg", f"model=openai:judge@{flaky.url}",
            "--input", str(inp), "--out", str(out), "--chunk-size", "2"]
    flaky.poison = {"POISON"}

    code, err = run_cli(args, tmp_path, kill_when=lambda: complete_lines(partial) >= 5)
    assert code is None, f"the judge finished before it could be killed: {err}"
    assert not out.exists()
    code, err = run_cli(args, tmp_path)  # resumes, then line 14 fails for good: a clear error, progress kept
    assert code == 2, err
    line = " ".join(one_error(err).split())
    assert "resuming:" in err and "HTTP 500" in line and "run the same command again to resume" in line
    assert re.search(r"1[0-4] of 16 lines are judged and kept in", line), line
    assert not out.exists()

    flaky.poison.clear()  # the endpoint is fixed
    code, err = run_cli(args, tmp_path)
    assert code == 0, err
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in got] == [r["id"] for r in rows], "every line exactly once, in order"
    assert [r["score"] for r in got] == [1.0 if "Step 1" in r["response"] else 0.0 for r in rows]
    assert {r["judge"] for r in got} == {f"harmbench?model=openai:judge@{flaky.url}"}
    assert not partial.exists()


# -- model ----------------------------------------------------------------------------------------

def test_generate_with_faults(tmp_path, flaky):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"question {i}"}) + "\n" for i in range(16)))
    out = tmp_path / "answers.jsonl"
    code, err = run_cli(["generate", "--model", f"openai:echo@{flaky.url}", "--prompts", str(prompts),
                         "--out", str(out), "--batch-size", "4"], tmp_path)
    assert code == 0, err
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["response"] for r in got] == [f"echo: question {i}" for i in range(16)]
    assert sum(flaky.counts[f] for f in FAULTS) > 0
