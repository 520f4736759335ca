"""``safethink generate`` end to end (real subprocesses), and the bundled model's conversion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from safethink.cli import main; main()", *args],
        capture_output=True, text=True, timeout=280, env={**os.environ, **(env or {})},
    )


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_unknown_model_spec():
    line = one_line_error(run_cli("generate", "--model", "gpt-5-turbo", "--prompt", "hi"))
    assert "unknown model spec 'gpt-5-turbo'" in line and "hf:<hub id or path>" in line


def test_missing_prompts_file(tmp_path):
    missing = tmp_path / "nope.jsonl"
    line = one_line_error(run_cli("generate", "--prompts", str(missing)))
    assert str(missing) in line and "no such file" in line


def test_bad_json_names_file_and_line(tmp_path):
    f = tmp_path / "prompts.jsonl"
    f.write_text('{"id": "a", "prompt": "hi"}\n\n{"id": "b", "prompt": "oops"\n{"id": "c", "prompt": "x"}\n')
    line = one_line_error(run_cli("generate", "--prompts", str(f)))
    assert f"{f}:3" in line and "bad JSON" in line


def test_record_without_prompt_names_the_line(tmp_path):
    f = tmp_path / "prompts.jsonl"
    f.write_text('{"id": "a", "prompt": "hi"}\n{"id": "b", "text": "no prompt key"}\n')
    line = one_line_error(run_cli("generate", "--prompts", str(f)))
    assert f"{f}:2" in line and "'prompt'" in line


def test_hub_id_not_in_cache(tmp_path):
    line = one_line_error(run_cli("generate", "--model", "hf:safethink-test/absent", "--prompt", "hi",
                                  env={"HF_HUB_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1"}))
    assert "not in the local Hugging Face cache" in line and "hf download safethink-test/absent" in line


def test_prompts_file_gets_a_response_per_line(tiny_dir, tmp_path):
    f = tmp_path / "prompts.jsonl"
    rows = [{"id": "p1", "prompt": "Say hi"},
            {"id": "p2", "messages": [{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": "Name a colour."}]},
            {"prompt": "no id here", "extra": 5}]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out" / "answers.jsonl"
    # In-process (typer's runner) so torch is not imported a second time in a subprocess.
    from typer.testing import CliRunner

    from safethink.cli import app

    res = CliRunner().invoke(app, ["generate", "--model", f"hf:{tiny_dir}", "--prompts", str(f),
                                   "--out", str(out), "--max-new-tokens", "4"])
    assert res.exit_code == 0, res.output
    assert "wrote 3 answers" in res.output
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["id"] for g in got] == ["p1", "p2", "3"]  # missing ids become the line number
    assert got[2]["extra"] == 5 and got[1]["messages"][0]["role"] == "system"
    assert all(isinstance(g["response"], str) and g["finish_reason"] in ("stop", "length") for g in got)
    assert not list(out.parent.glob(".answers.jsonl.*"))  # atomic write left no temp file


@pytest.mark.slow
def test_bundled_model_knows_the_capital_of_france():
    proc = run_cli("generate", "--prompt", "What is the capital of France?", "--max-new-tokens", "24")
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(1200)  # two real GGUF conversions: ~40 s on an idle laptop CPU
def test_bundled_conversion_is_atomic(tmp_path, monkeypatch):
    """A crash while saving leaves nothing that loads; the next call converts cleanly."""
    import transformers

    from safethink.errors import SafethinkError
    from safethink.models._bundled import _COMPLETE_MARKER, bundled_model_dir

    monkeypatch.setenv("SAFETHINK_HOME", str(tmp_path))
    target = tmp_path / "models" / "smollm2-135m-instruct"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # a stale, half-written copy from an older run

    real_save = transformers.PreTrainedModel.save_pretrained

    def save_then_crash(self, *args, **kwargs):
        real_save(self, *args, **kwargs)  # the weights hit the disk, then the process "dies"
        raise RuntimeError("simulated crash during conversion")

    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", save_then_crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        bundled_model_dir()
    assert not (target / _COMPLETE_MARKER).exists()
    assert [p.name for p in (tmp_path / "models").iterdir()] == [target.name]  # no temp dir left
    with pytest.raises(SafethinkError, match="not converted"):
        bundled_model_dir(convert=False)

    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", real_save)
    assert bundled_model_dir() == target
    assert (target / _COMPLETE_MARKER).is_file() and (target / "model.safetensors").is_file()
    assert json.loads((target / "config.json").read_text())["model_type"] == "llama"
    assert bundled_model_dir(convert=False) == target
    assert sorted(p.name for p in Path(tmp_path / "models").iterdir()) == [target.name]
