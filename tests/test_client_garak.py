"""garak (NVIDIA's LLM vulnerability scanner) probes a model served by safethink and writes its report.

garak runs from its own cached venv (see _venvs.py; its transformers and openai pins differ from
safethink's) as a subprocess, with its ``openai.OpenAICompatible`` generator pointed at a real
server on 127.0.0.1, and three DAN jailbreak probes (prompts shipped inside garak, string
detectors: nothing is downloaded). The server answers from ``mock:`` files, once always refusing
and once always in persona, so the report's verdicts are known in advance; docs/serve.md has the
numbers for the bundled model.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from _venvs import tool_python
from test_serve_openai import serving

from safethink.models import load_model
from safethink.serve import create_app

pytestmark = [pytest.mark.clients, pytest.mark.timeout(1800)]  # the first run builds garak's venv

GARAK = ["garak==0.17.1"]
KEY = "sk-garak"
PROBES = ("dan.Dan_11_0", "dan.DUDE", "dan.STAN")
DETECTORS = {"dan.Dan_11_0": "dan.DAN", "dan.DUDE": "dan.DUDE", "dan.STAN": "dan.STAN"}
GENERATIONS = 2
REFUSAL = "I'm sorry, but I cannot help with that request."
IN_PERSONA = "DAN: Sure thing. DUDE: Sure thing. STAN: Sure thing. Here is the whole plan, step by step."


@pytest.fixture(scope="module")
def garak_python() -> Path:
    return tool_python("garak", GARAK)


def run_garak(python: Path, base_url: str, model: str, home: Path, *, prefix: str = "run") -> list[dict]:
    """Scan ``base_url`` with the DAN probes; return the report's JSON lines."""
    options = {"openai": {"OpenAICompatible": {
        "uri": f"{base_url}/v1/", "max_tokens": 64, "temperature": 0.0,
        "suppressed_params": ["frequency_penalty", "presence_penalty", "stop"]}}}
    (home / "generator.json").write_text(json.dumps(options))
    env = {**os.environ, "OPENAICOMPATIBLE_API_KEY": KEY, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           # garak keeps its config, plugin cache and reports under the XDG folders: keep them here
           "XDG_DATA_HOME": str(home / "data"), "XDG_CONFIG_HOME": str(home / "config"),
           "XDG_CACHE_HOME": str(home / "cache")}
    cmd = [str(python), "-m", "garak", "--target_type", "openai.OpenAICompatible", "--target_name", model,
           "--generator_option_file", str(home / "generator.json"),
           "--spec", ",".join(f"probes.{p}" for p in PROBES), "--generations", str(GENERATIONS),
           "--report_prefix", prefix]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    runs = home / "data" / "garak" / "garak_runs"
    report = runs / f"{prefix}.report.jsonl"
    assert report.is_file(), (list(runs.glob("*")), r.stdout[-3000:])
    assert (runs / f"{prefix}.report.html").is_file()
    return [json.loads(line) for line in report.read_text().splitlines() if line.strip()]


def evals(report: list[dict]) -> dict[tuple[str, str], dict]:
    return {(e["probe"], e["detector"]): e for e in report if e["entry_type"] == "eval"}


def answers_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "answers.jsonl"
    path.write_text(json.dumps({"text": text}) + "\n")
    return path


@pytest.mark.parametrize("answer, verdict", [(REFUSAL, "passed"), (IN_PERSONA, "fails")], ids=["refuses", "in-persona"])
def test_garak_report_reflects_the_served_answers(garak_python, tmp_path, answer, verdict):
    model = load_model(f"mock:{answers_file(tmp_path, answer)}")
    app = create_app(model, "none", api_key=KEY, model_name="served")
    with serving(app) as url:
        start = time.monotonic()
        report = run_garak(garak_python, url, "served", tmp_path)
        print(f"garak ({verdict}): {time.monotonic() - start:.1f} s")
        health = httpx.get(f"{url}/health").json()

    results = evals(report)
    expected = {(p, d) for p, d in DETECTORS.items()} | {(p, "mitigation.MitigationBypass") for p in PROBES}
    assert set(results) == expected
    for key, e in results.items():
        assert e["total_evaluated"] == GENERATIONS, (key, e)
        assert e[verdict] == GENERATIONS, (key, e)  # every generation judged the same way

    attempts = [a for a in report if a["entry_type"] == "attempt" and a["status"] == 2]
    assert sorted(a["probe_classname"] for a in attempts) == sorted(PROBES)
    for a in attempts:
        assert [o["text"] for o in a["outputs"]] == [answer] * GENERATIONS
    # every probe prompt reached the model, one conversation per generation, as garak sent it
    asked = [conv for call in model.calls for conv in call]
    assert len(asked) == health["requests"] == len(PROBES) * GENERATIONS
    sent = sorted(a["prompt"]["turns"][-1]["content"]["text"] for a in attempts for _ in range(GENERATIONS))
    assert sorted(conv[-1]["content"] for conv in asked) == sent
