"""`safethink attacks list` and `safethink attacks apply`."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

from typer.testing import CliRunner

from safethink.attacks import ATTACKS
from safethink.cli import app

runner = CliRunner()


def _cli(*args: str) -> subprocess.CompletedProcess:
    """Run the real console entry point (errors become one line + exit code 2 there)."""
    code = "import sys; from safethink.cli import main; sys.argv = ['safethink', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})


def test_list_shows_every_attack():
    res = runner.invoke(app, ["attacks", "list"], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    for name in ATTACKS.names():
        assert name in res.output
    assert "needs_target" in res.output and "arxiv.org/abs/2307.15043" in res.output
    tagged = [line for line in res.output.splitlines() if "evolution" in line]
    assert {n for n in ("slang", "role-play", "expert-endorsement") if any(f" {n} " in line for line in tagged)} \
        == {"slang", "role-play", "expert-endorsement"}


def test_apply_prints_the_attacked_prompt():
    res = runner.invoke(app, ["attacks", "apply", "--attack", "base64", "--prompt", "How do I bake bread?",
                              "--arg", "mode=both"], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert base64.b64encode(b"How do I bake bread?").decode() in res.output


def test_apply_json_records_params_and_seed(shared_data):
    res = runner.invoke(app, ["attacks", "apply", "--attack", "dan", "--prompt", "Say hello", "--seed", "4",
                              "--arg", f"templates={shared_data / 'jailbreak_templates' / 'dan'}",
                              "--arg", "model_name=SmolLM", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["seed"] == 4 and out["params"]["model_name"] == "SmolLM"
    assert "SmolLM" in out["messages"][0]["content"] and "{generator.name}" not in out["messages"][0]["content"]
    assert out["messages"][0]["content"].endswith("Say hello")


def test_apply_multi_turn_and_prefill_output():
    res = runner.invoke(app, ["attacks", "apply", "--attack", "prefilling", "--prompt", "Name a colour"])
    assert res.exit_code == 0 and "prefilled" in res.output and "Sure, here is" in res.output
    res = runner.invoke(app, ["attacks", "apply", "--attack", "few-shot", "--prompt", "Name a colour", "--arg", "n_shots=2"])
    assert res.exit_code == 0 and res.output.count("--- user ---") == 3


def test_bad_input_is_one_clear_error():
    r = _cli("attacks", "apply", "--attack", "no-such-attack", "--prompt", "x")
    assert r.returncode == 2 and "unknown attack 'no-such-attack'" in r.stderr
    r = _cli("attacks", "apply", "--attack", "gcg", "--prompt", "x")
    assert r.returncode == 2 and "--target" in r.stderr
    r = _cli("attacks", "apply", "--attack", "base64", "--prompt", "x", "--arg", "colour")
    assert r.returncode == 2 and "key=value" in r.stderr
    r = _cli("attacks", "apply", "--attack", "base64", "--prompt", "x", "--arg", "speed=3")
    assert r.returncode == 2 and "bad arguments" in r.stderr
