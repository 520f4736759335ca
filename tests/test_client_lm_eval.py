"""lm-evaluation-harness (``lm-eval``) scores a model served by safethink, with the shipped task.

lm-eval runs from its own cached venv (see _venvs.py) as a subprocess, through its
``local-chat-completions`` model type, against a real server on 127.0.0.1; the task is
``safethink_basics`` from ``safethink.data.lm_eval``. The first test serves the tiny model made to
say scripted answers, so the score lm-eval reports is known in advance; the slow test serves the
bundled model with the ``safethink serve`` command.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from _venvs import tool_python
from test_guard_scripted import Scripted
from test_serve_cli import serve_command
from test_serve_openai import serving

from safethink.data.lm_eval import TASK_DIR
from safethink.serve import create_app

pytestmark = [pytest.mark.clients, pytest.mark.timeout(1800)]  # the first run builds lm-eval's venv

LM_EVAL = ["lm-eval[api]==0.4.13"]
KEY = "sk-lm-eval"
TASK = "safethink_basics"


def task_module():
    """tasks.py loaded by path, as lm-eval loads it."""
    spec = importlib.util.spec_from_file_location("tasks", TASK_DIR / "tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def lm_eval_python() -> Path:
    return tool_python("lm-eval", LM_EVAL)


def run_lm_eval(python: Path, base_url: str, model: str, out: Path, *, concurrent: int = 1) -> dict:
    """Run the lm-eval CLI on the shipped task; return the results JSON."""
    env = {**os.environ, "OPENAI_API_KEY": KEY, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    cmd = [str(python), "-m", "lm_eval", "run", "--model", "local-chat-completions",
           "--model_args", f"model={model},base_url={base_url}/v1/chat/completions,"
                           f"num_concurrent={concurrent},max_retries=1",
           "--apply_chat_template", "--include_path", str(TASK_DIR), "--tasks", TASK,
           "--output_path", str(out), "--log_samples"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    results = list(out.glob("**/results_*.json"))
    assert len(results) == 1, (results, r.stderr[-3000:])
    return json.loads(results[0].read_text())


def samples(out: Path) -> list[dict]:
    files = list(out.glob(f"**/samples_{TASK}_*.jsonl"))
    assert len(files) == 1, files
    return [json.loads(line) for line in files[0].read_text().splitlines() if line.strip()]


def test_task_scoring_and_data():
    m = task_module()
    docs = m.load_basics()["test"]
    assert len(docs) == 20 and len({d["question"] for d in docs}) == 20
    paris = next(d for d in docs if "France" in d["question"])
    assert m.process_results(paris, ["Paris."]) == {"exact_match": 1.0, "contains": 1.0}
    assert m.process_results(paris, ["The capital of France is Paris!"]) == {"exact_match": 0.0, "contains": 1.0}
    assert m.process_results(paris, ["Parisian food"]) == {"exact_match": 0.0, "contains": 0.0}
    assert m.process_results(paris, [""]) == {"exact_match": 0.0, "contains": 0.0}
    twelve = next(d for d in docs if "7 + 5" in d["question"])
    assert m.process_results(twelve, ["Twelve"])["exact_match"] == 1.0


def test_task_rejects_a_malformed_data_file(tmp_path, monkeypatch):
    m = task_module()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "What is 1 + 1?", "answers": []}\n')
    monkeypatch.setattr(m, "DATA", bad)
    with pytest.raises(ValueError, match=r"bad.jsonl:1: expected .* non-empty list"):
        m.load_basics()


def scripted_answer(docs: list[dict]):
    """Questions 0, 4, 8... get the bare answer, 1, 5, 9... the answer in a sentence, the rest none."""

    def script(prompt: str, call: int) -> str:
        hits = [i for i, d in enumerate(docs) if d["question"] in prompt]
        assert len(hits) == 1, prompt
        i = hits[0]
        answer = docs[i]["answers"][0]
        return [answer, f"I think it is {answer}, yes.", "I do not know.", "Let me think about it."][i % 4]

    return script


def test_lm_eval_scores_a_served_model(lm_eval_python, tiny_model, tmp_path):
    docs = list(task_module().load_basics()["test"])
    app = create_app(tiny_model, "none", api_key=KEY, model_name="tiny-scripted", max_batch=4)
    with Scripted(tiny_model, scripted_answer(docs)).active() as scripted, serving(app) as url:
        start = time.monotonic()
        results = run_lm_eval(lm_eval_python, url, "tiny-scripted", tmp_path)
        seconds = time.monotonic() - start
        health = httpx.get(f"{url}/health").json()
    print(f"lm-eval against the scripted tiny model: {seconds:.1f} s")
    scores = results["results"][TASK]
    assert scores["exact_match,none"] == pytest.approx(5 / 20)  # questions 0, 4, ..., 16
    assert scores["contains,none"] == pytest.approx(10 / 20)  # and 1, 5, ..., 17
    assert results["n-samples"][TASK] == {"original": 20, "effective": 20}
    assert health["requests"] == 20 and scripted.calls >= 1
    rows = samples(tmp_path)
    assert sorted(r["doc_id"] for r in rows) == list(range(20))
    by_doc = {r["doc_id"]: r for r in rows}
    assert by_doc[0]["resps"][0][0] == docs[0]["answers"][0]
    assert by_doc[2]["resps"][0][0] == "I do not know." and by_doc[2]["exact_match"] == 0.0


@pytest.mark.slow
def test_lm_eval_against_safethink_serve_with_the_bundled_model(lm_eval_python, bundled_dir, tmp_path):
    env = {**os.environ, "SAFETHINK_API_KEY": KEY, "HF_HUB_OFFLINE": "1"}
    with serve_command(["--model", "smollm2-135m", "--device", "cpu"], tmp_path, env) as url:
        start = time.monotonic()
        results = run_lm_eval(lm_eval_python, url, "smollm2-135m", tmp_path / "out", concurrent=4)
        print(f"lm-eval against smollm2-135m: {time.monotonic() - start:.1f} s, {results['results'][TASK]}")
        health = httpx.get(f"{url}/health").json()
    scores = results["results"][TASK]
    assert results["n-samples"][TASK] == {"original": 20, "effective": 20}
    for metric in ("exact_match,none", "contains,none"):
        assert 0.0 <= scores[metric] <= 1.0
    assert scores["exact_match,none"] <= scores["contains,none"]
    rows = samples(tmp_path / "out")
    assert len(rows) == 20 and all(r["resps"][0][0].strip() for r in rows)  # the model answered every question
    assert health["requests"] == 20
