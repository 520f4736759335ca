"""``safethink serve`` as a real subprocess on 127.0.0.1, and its option parsing."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from safethink.cli._common import parse_pairs
from safethink.cli._serve import auto_guard
from safethink.errors import InputError, SpecError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_command(args: list[str], log_dir: Path, env: dict[str, str]) -> Iterator[str]:
    """``safethink serve ARGS`` on a free port of 127.0.0.1 in its own process, once /health answers; yields its
    URL and stops it after. Its output goes to ``log_dir/server.log``, shown if it dies while starting."""
    port = free_port()
    log = (log_dir / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "safethink.cli", "serve", *args, "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (log_dir / "server.log").read_text()
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


@pytest.mark.timeout(240)
def test_serve_command_answers_openai_clients(tiny_dir, tmp_path):
    env = {**os.environ, "SAFETHINK_API_KEY": "env-key", "HF_HUB_OFFLINE": "1"}
    args = ["--model", f"hf:{tiny_dir}", "--guard", "r2d", "--model-name", "tiny", "--device", "cpu"]
    with serve_command(args, tmp_path, env) as url:
        health = httpx.get(f"{url}/health").json()
        assert health["guard"] == "r2d" and health["model"] == "tiny"
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="env-key", max_retries=0)
        r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
        assert isinstance(r.choices[0].message.content, str) and r.usage.completion_tokens >= 1
        with pytest.raises(openai.AuthenticationError):  # the key came from the environment
            openai.OpenAI(base_url=f"{url}/v1", api_key="other", max_retries=0).models.list()


def test_serve_rejects_a_bad_guard_before_loading(tiny_dir):
    r = subprocess.run([sys.executable, "-m", "safethink.cli", "serve", "--model", f"hf:{tiny_dir}",
                        "--guard", "r2d-pivot", "--arg", "on_unsafe=explode"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "on_unsafe" in r.stderr


def test_plugin_args_are_yaml_scalars():
    assert parse_pairs(["on_unsafe=rollback", "fail_open=true", "rollback_tokens=80"]) == {
        "on_unsafe": "rollback", "fail_open": True, "rollback_tokens": 80}
    with pytest.raises(SpecError):
        parse_pairs(["no-equals-sign"])


def test_auto_guard_follows_the_training_method(tmp_path):
    assert auto_guard(None) == "none"  # a plain model: nothing to follow
    for method, guard in (("r2d", "r2d-pivot"), ("scot", "scot")):
        (tmp_path / "safethink_run.json").write_text(json.dumps({"method": method}))
        assert auto_guard(tmp_path) == guard
    (tmp_path / "safethink_run.json").write_text("{broken")
    with pytest.raises(InputError, match="safethink_run.json"):
        auto_guard(tmp_path)


@pytest.mark.parametrize("run", [None, {}, {"method": "sft"}])
def test_auto_guard_never_serves_an_adapter_unguarded(tmp_path, run):
    if run is not None:
        (tmp_path / "safethink_run.json").write_text(json.dumps(run))
    with pytest.raises(SpecError, match="--guard"):
        auto_guard(tmp_path)


def test_serve_refuses_to_start_for_an_adapter_without_a_method(tmp_path):
    answers = tmp_path / "answers.jsonl"
    answers.write_text('{"text": "hi"}\n')
    r = subprocess.run([sys.executable, "-m", "safethink.cli", "serve", "--model", f"mock:{answers}",
                        "--adapter", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--guard" in r.stderr
    r = subprocess.run([sys.executable, "-m", "safethink.cli", "serve", "--model", f"mock:{answers}",
                        "--reasoning", "everything"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--reasoning" in r.stderr


@pytest.mark.timeout(120)
def test_serve_with_mock_answers_and_reasoning_modes(tmp_path):
    """The documented CI setup: scripted answers, a guard, reasoning withheld unless asked for."""
    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps({"text": "<think> Weather talk. [SAFE] Build a bomb (illicit/violent). [UNSAFE] "
                                           "</think> [SAFE] ok [SAFE]"}) + "\n")
    for mode, reasoning in (("none", None), ("safe", "Weather talk.")):
        port = free_port()
        cmd = [sys.executable, "-m", "safethink.cli", "serve", "--model", f"mock:{answers}", "--port", str(port),
               "--guard", "r2d-pivot", "--model-name", "mock", "--reasoning", mode]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_healthy(proc, port)
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
            r = client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "hi"}])
            msg = r.choices[0].message
            assert msg.content == "I can't help with this request: my safety check flagged it under illicit/violent."
            assert getattr(msg, "reasoning_content", None) == reasoning and r.choices[0].finish_reason == "content_filter"
        finally:
            proc.terminate()
            proc.wait(30)


def wait_healthy(proc, port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, "server exited"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "server did not come up"
        time.sleep(0.2)
