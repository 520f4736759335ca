"""`safethink eval` and `safethink report` end to end, and a run with the real built-in plugins."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from safethink.cli import app
from safethink.eval import open_store, parse_spec, run_eval
from test_eval_plugins import spec_dict


@pytest.mark.timeout(600)
def test_eval_then_report_cli(tmp_path, tiny_dir):
    cfg = tmp_path / "spec.yaml"
    cfg.write_text(yaml.safe_dump(spec_dict(tmp_path, tiny_dir)))
    out = tmp_path / "cli-run"
    runner = CliRunner()
    r = runner.invoke(app, ["eval", "--config", str(cfg), "--out", str(out), "--limit", "2"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output + repr(r.exception)
    # --limit 2 keeps 2 of the 7 records; each harmful one gets 2 attacks, each benign one 1 attempt
    with open_store(out) as st:
        rows = st.attempts()
    n_h = sum(1 for a in rows if a.label == "harmful") // 2
    n_b = sum(1 for a in rows if a.label == "benign")
    assert n_h + n_b == 2 and len(rows) == 2 * n_h + n_b
    # the test judge does not say it rates harm: its rate is a non-refusal rate, not an ASR
    assert "non-refusal rate (all attacks)" in r.output and "ASR" not in r.output and "report:" in r.output
    assert (out / "report.html").is_file() and (out / "report.md").is_file()

    r2 = runner.invoke(app, ["report", str(out), "--export", "jsonl", "--export", "parquet"])
    assert r2.exit_code == 0, r2.output + repr(r2.exception)
    lines = (out / "attempts.jsonl").read_text().splitlines()
    assert len(lines) == len(rows) and (out / "attempts.parquet").is_file()

    r3 = runner.invoke(app, ["eval", "--config", str(cfg), "--out", str(out), "--limit", "2", "--no-report"],
                       env={"COLUMNS": "200"})
    assert r3.exit_code == 0 and f"0 attempts added, {len(rows)} already stored" in r3.output


def test_cli_errors_are_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [{spec: smollm2-135m}]\nattacks: [{name: none, sed: 1}]\ndatasets: [{source: x}]\n")
    code = "from safethink.cli import main; main()"
    p = subprocess.run([sys.executable, "-c", code, "eval", "--config", str(bad)], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert p.returncode == 2
    assert "attacks[0].sed: unknown key" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run([sys.executable, "-c", code, "report", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "no results database" in p.stderr


@pytest.mark.timeout(600)
def test_real_plugins_on_the_tiny_model(tmp_path, tiny_model):
    from safethink.attacks._base import ATTACKS
    from safethink.guard._base import GUARDS
    from safethink.judges._base import JUDGES

    import safethink.attacks  # noqa: F401  (registration)
    import safethink.guard  # noqa: F401
    import safethink.judges  # noqa: F401

    missing = [n for reg, n in ((ATTACKS, "none"), (ATTACKS, "base64"), (GUARDS, "none"), (JUDGES, "keyword-gcg"))
               if n not in reg]
    if missing:
        pytest.skip(f"built-in plugins not registered yet: {missing}")
    d = spec_dict(tmp_path, tmp_path)  # the tiny model itself is passed in preloaded
    d.update(plugins=[], models=[{"spec": tiny_model.spec, "name": "tiny"}], defences=[{"guard": "none"}],
             attacks=[{"name": "none"}, {"name": "base64", "args": {"mode": "both"}}],
             judges=[{"name": "keyword-gcg"}])
    res = run_eval(parse_spec(d), models={"tiny": tiny_model})
    assert res.added == 11
    with open_store(res.out_dir) as st:
        rows = st.attempts()
    b64 = [a for a in rows if a.attack == "base64"]
    assert b64 and all(a.attack_params.get("mode") == "both" for a in b64)
    assert all(a.messages[-1]["content"] != a.behaviour for a in b64)  # the request was encoded
    plain = [a for a in rows if a.attack == "none" and a.label == "harmful"]
    assert all(a.behaviour in a.messages[-1]["content"] for a in plain)
    for a in rows:
        v = a.verdicts["keyword-gcg"]
        assert isinstance(v["refused"], bool) and 0.0 <= v["score"] <= 1.0
    assert json.loads(json.dumps(rows[0].guard_build))["name"] == "none"
