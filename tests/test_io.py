"""The shared input reader and append-only logs (``safethink.io``), and bad UTF-8 in every CLI input file:
one line naming the file, the line and the byte offset, exit code 2, nothing written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from safethink.errors import InputError
from safethink.io import append_log, iter_jsonl, read_log, read_text

pytestmark = pytest.mark.timeout(120)

LATIN1 = "café".encode("latin-1")  # b"caf\xe9": the usual way a file is not UTF-8


def test_read_text_names_line_and_byte_offset(tmp_path):
    p = tmp_path / "a.csv"
    p.write_bytes(b"prompt\nfine\n" + LATIN1 + b" au lait\n")
    with pytest.raises(InputError) as e:
        read_text(p)
    assert str(e.value) == f"{p}:3: not valid UTF-8 (bytes e9 20 61 75 at byte offset 15); save the file as UTF-8"
    assert e.value.line == 3
    p.write_bytes("\ufeffprompt\ncafé\n".encode())
    assert read_text(p) == "prompt\ncafé\n"  # a BOM is dropped
    with pytest.raises(InputError, match="no such file"):
        read_text(tmp_path / "missing.txt")


def test_iter_jsonl_streams_and_stops_at_the_bad_line(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes("\ufeff".encode() + b'{"a": 1}\n\n{"a": "\xc3\xa9"}\n{"a": "' + LATIN1 + b'"}\n')
    got = []
    with pytest.raises(InputError, match=r"a.jsonl:4: not valid UTF-8 \(bytes e9 22 7d 0a at byte offset 35\)"):
        for n, obj in iter_jsonl(p):
            got.append((n, obj))
    assert got == [(1, {"a": 1}), (3, {"a": "é"})]


def test_logs_keep_complete_lines_around_a_torn_one(tmp_path):
    p = tmp_path / "log.jsonl"
    append_log(p, [{"id": 1, "t": "é"}])
    with p.open("ab") as f:  # a kill mid-write: cut inside a UTF-8 character, no newline
        f.write(json.dumps({"id": 2, "t": "é"}, ensure_ascii=False).encode()[:-3])
    append_log(p, [{"id": 3}, {"id": 4}])  # ends the torn line first
    assert read_log(p) == [{"id": 1, "t": "é"}, {"id": 3}, {"id": 4}]
    assert read_log(tmp_path / "none.jsonl") == []


# -- every CLI input file ---------------------------------------------------------------------------

@pytest.fixture
def cli(capsys, monkeypatch):
    from safethink.cli import main

    def run(*args: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["safethink", *map(str, args)])
        monkeypatch.setenv("COLUMNS", "300")
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        return code, capsys.readouterr().err

    return run


def one_error(result: tuple[int, str]) -> str:
    code, err = result
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _good_jsonl(path: Path, n: int = 3, key: str = "prompt") -> Path:
    path.write_text("".join(json.dumps({key: f"Tell me about thing {i}"}) + "\n" for i in range(n)))
    return path


@pytest.mark.parametrize("bad_name", ["harm.jsonl", "harm.csv", "ben.json", "policy.yaml"])
def test_data_build_inputs(tmp_path, cli, bad_name):
    h, b, pol = tmp_path / "harm.jsonl", tmp_path / "ben.jsonl", tmp_path / "policy.yaml"
    _good_jsonl(h)
    _good_jsonl(b)
    pol.write_text("id: x\n")
    bad = tmp_path / bad_name
    bad.write_bytes(b"prompt\n" + b"Tell me about " + LATIN1 + b"\n" if bad_name.endswith(".csv") else
                    b'[{"prompt": "ok"},\n {"prompt": "' + LATIN1 + b'"}]\n' if bad_name.endswith(".json") else
                    b"id: x\nname: " + LATIN1 + b"\n" if bad_name.endswith(".yaml") else
                    b'{"prompt": "ok"}\n{"prompt": "' + LATIN1 + b'"}\n')
    harm = bad if bad_name.startswith("harm") else h
    ben = bad if bad_name.startswith("ben") else b
    out = tmp_path / "out"
    line = one_error(cli("data", "build", "--method", "scot", "--harmful", harm, "--benign", ben, "--out", out,
                         "--policy", pol, "--cache-dir", tmp_path / "c"))
    assert f"{bad}:2: not valid UTF-8" in line and "byte offset" in line
    assert not out.exists()  # nothing half-written


def test_data_show_input(tmp_path, cli):
    bad = tmp_path / "p.csv"
    bad.write_bytes(b"prompt,label\nok,harmful\n" + LATIN1 + b",harmful\n")
    assert f"{bad}:3: not valid UTF-8" in one_error(cli("data", "show", bad))


def test_generate_prompts_file(tmp_path, cli):
    bad = tmp_path / "p.jsonl"
    bad.write_bytes(b'{"prompt": "' + LATIN1 + b'"}\n')
    out = tmp_path / "answers.jsonl"
    line = one_error(cli("generate", "--model", "mock:none.jsonl", "--prompts", bad, "--out", out))
    assert f"{bad}:1: not valid UTF-8" in line and not out.exists()


def test_eval_spec_and_its_files(tmp_path, cli):
    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps({"text": "I can't help with that."}) + "\n")
    prompts = _good_jsonl(tmp_path / "prompts.jsonl")
    spec = {"models": [{"spec": f"mock:{answers}"}], "attacks": [{"name": "none"}],
            "datasets": [{"source": str(prompts), "label": "harmful"}], "judges": [{"name": "keyword-gcg"}],
            "out": str(tmp_path / "run")}
    cfg = tmp_path / "spec.yaml"
    cfg.write_bytes(json.dumps(spec).encode() + b"\n# " + LATIN1 + b"\n")
    assert f"{cfg}:2: not valid UTF-8" in one_error(cli("eval", "--config", cfg))
    cfg.write_text(json.dumps(spec))
    prompts.write_bytes(b'{"prompt": "fine"}\n{"prompt": "' + LATIN1 + b'"}\n')
    assert f"{prompts}:2: not valid UTF-8" in one_error(cli("eval", "--config", cfg))
    _good_jsonl(prompts)
    answers.write_bytes(b'{"text": "' + LATIN1 + b'"}\n')
    assert f"{answers}:1: not valid UTF-8" in one_error(cli("eval", "--config", cfg))
    assert not (tmp_path / "run").exists()


def test_named_source_copy_in_the_data_dir(tmp_path, cli):
    d = tmp_path / "data"
    (d / "advbench").mkdir(parents=True)
    bad = d / "advbench" / "harmful_behaviors.csv"
    bad.write_bytes(b"goal,target\nok,Sure\n" + LATIN1 + b",Sure\n")
    b = _good_jsonl(tmp_path / "ben.jsonl")
    out = tmp_path / "out"
    line = one_error(cli("data", "build", "--method", "scot", "--harmful", "advbench", "--benign", b, "--out", out,
                         "--data-dir", d, "--cache-dir", tmp_path / "c"))
    assert f"{bad}:3: not valid UTF-8" in line and not out.exists()


def test_library_build_names_the_file_too(tmp_path):
    from safethink.synth import BuildConfig, build_dataset

    bad = tmp_path / "harm.csv"
    bad.write_bytes(b"prompt\n" + LATIN1 + b"\n")
    cfg = BuildConfig(method="scot", harmful=[str(bad)], benign=[str(_good_jsonl(tmp_path / "b.jsonl"))],
                      check_eval_overlap=False)
    with pytest.raises(InputError, match=rf"{bad}:2: not valid UTF-8"):
        build_dataset(cfg, tmp_path / "out", cache_dir=tmp_path / "c")
    assert not (tmp_path / "out").exists()
