"""``safethink probe fit``, ``probe score`` and ``probe eval`` as a user runs them."""

from __future__ import annotations

import json

import pytest

from _probes import HARM, SAFE, cli, write_sources
from safethink.probes import RequestProbe, TunedProbe, load_probe

pytestmark = pytest.mark.timeout(180)


def test_cli_fit_writes_a_probe_and_score_uses_it(tiny_dir, tmp_path):
    h, b = write_sources(tmp_path)
    out = tmp_path / "probe.json"
    res = cli("probe", "fit", "--model", f"hf:{tiny_dir}", "--harmful", str(h), "--benign", str(b),
               "--attacks", "none,prefix-injection", "--pool", "mean", "--out", str(out))
    assert res.returncode == 0, res.stderr
    probe = RequestProbe.load(out)
    fitted = probe.metrics["fitted_on"]
    assert fitted["attacks"] == ["none", "prefix-injection"] and fitted["harmful_requests"] == 6
    assert probe.metrics["n_harmful"] == 12 and probe.metrics["n_benign"] == 12
    one = tmp_path / "one.json"
    res = cli("probe", "fit", "--model", f"hf:{tiny_dir}", "--harmful", str(h), "--benign", str(b),
               "--attacks", "none,prefix-injection,base64", "--forms-per-request", "1", "--out", str(one))
    assert res.returncode == 0, res.stderr
    one_probe = RequestProbe.load(one)
    assert one_probe.metrics["n_harmful"] == 6 and one_probe.metrics["fitted_on"]["forms_per_request"] == 1
    res = cli("probe", "score", str(out), HARM[0], SAFE[0], "--model", f"hf:{tiny_dir}")
    assert res.returncode == 0, res.stderr
    assert "p(harmful)" in res.stdout and HARM[0][:20] in res.stdout

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "prompt": "ok"}) + "\n{not json\n")
    res = cli("probe", "fit", "--model", f"hf:{tiny_dir}", "--harmful", str(bad), "--benign", str(b),
               "--out", str(tmp_path / "never.json"))
    assert res.returncode == 2 and "bad.jsonl:2: bad JSON" in res.stderr
    assert not (tmp_path / "never.json").exists()
    res = cli("probe", "fit", "--model", f"hf:{tiny_dir}", "--harmful", str(h), "--benign", str(b),
               "--ensembles", "1,x", "--out", str(tmp_path / "never.json"))
    assert res.returncode != 0 and "--ensembles '1,x'" in res.stderr
    assert not (tmp_path / "never.json").exists()


def test_wrapper_fit_labels_every_request_by_its_form_not_its_intent(tiny_dir, tmp_path):
    h, b = write_sources(tmp_path)
    out = tmp_path / "wrapper.json"
    res = cli("probe", "fit", "--model", f"hf:{tiny_dir}", "--harmful", str(h), "--benign", str(b), "--target",
               "wrapper", "--attacks", "base64,prefix-injection", "--plain-attacks", "none,misspellings",
               "--out", str(out))
    assert res.returncode == 0, res.stderr
    # 12 requests (harmful and benign alike) under 2 wrappers are positives; the same 12 under 2 plain forms
    # are negatives, and so are the model's answers to the 6 benign requests as documents of ordinary tasks
    assert "24 wrapped, 30 plain" in res.stdout and f"--arg path={out} --arg then=probe" in res.stdout
    probe = RequestProbe.load(out)
    assert probe.target == "wrapper" and probe.metrics["fitted_on"]["plain_attacks"] == ["none", "misspellings"]
    assert probe.metrics["n_harmful"] == 24 and probe.metrics["n_benign"] == 30
    assert probe.metrics["fitted_on"]["documents"] == 6
    res = cli("probe", "score", str(out), SAFE[0], "--model", f"hf:{tiny_dir}")
    assert res.returncode == 0 and "p(wrapped)" in res.stdout, res.stderr
    res = cli("probe", "fit", "--model", f"hf:{tiny_dir}", "--harmful", str(h), "--benign", str(b), "--target",
               "wrapper", "--attacks", "none", "--out", str(tmp_path / "never.json"))
    assert res.returncode == 2 and "needs attacks that wrap the request" in res.stderr
    res = cli("probe", "fit", "--model", f"hf:{tiny_dir}", "--harmful", str(h), "--benign", str(b),
               "--plain-attacks", "past-tense", "--out", str(tmp_path / "never.json"))
    assert res.returncode == 2 and "--plain-attacks and --documents are for --target wrapper" in res.stderr
    assert not (tmp_path / "never.json").exists()


def test_cli_fit_takes_negatives_and_eval_reports_flag_rates_per_kind(tiny_dir, tmp_path):
    h, b = write_sources(tmp_path)
    out = tmp_path / "wrapper.json"
    res = cli("probe", "fit", "--model", f"hf:{tiny_dir}", "--harmful", str(h), "--benign", str(b), "--target",
               "wrapper", "--attacks", "base64,prefix-injection", "--forms-per-request", "1", "--documents", "0",
               "--negatives", "builtin:realistic-train", "--negatives-limit", "12", "--max-negatives-fpr", "0.1",
               "--out", str(out))
    assert res.returncode == 0, res.stderr
    probe = RequestProbe.load(out)
    # 12 requests + 12 realistic ones under one wrapper each; the 12 requests and the 12 realistic ones as sent
    assert "24 wrapped, 24 plain" in res.stdout and "flagged: --negatives" in res.stdout
    neg = probe.metrics["negatives"]
    assert neg["n"] == 12 and neg["max_fpr"] == 0.1 and neg["held_out_flagged"] <= 0.1
    assert probe.metrics["fitted_on"]["negatives"] == ["builtin:realistic-train"]

    rates = tmp_path / "rates.json"
    res = cli("probe", "eval", str(out), str(out), "--model", f"hf:{tiny_dir}", "--harmful", str(h), "--benign",
               str(b), "--benign", "builtin:realistic-test", "--limit", "9", "--attacks", "none,base64",
               "--out", str(rates))
    assert res.returncode == 0, res.stderr
    saved = json.loads(rates.read_text())
    rows = saved["rows"]
    assert [(r["source"], r["attack"], r["n"]) for r in rows] == [
        (str(h), "none", 6), (str(h), "base64", 6), (str(b), "none", 6), ("builtin:realistic-test", "none", 9)]
    real = rows[-1]["probes"][0]
    assert sum(k["n"] for k in real["by_kind"].values()) == 9 and real["threshold"] == probe.threshold
    assert all(r["probes"][0] == r["probes"][1] for r in rows)  # the same probe twice: the same rates
    assert "realistic-test" in res.stdout and "all benign" in res.stdout and "probe eval" in saved["command"]
    res = cli("probe", "eval", str(out), "--model", f"hf:{tiny_dir}")
    assert res.returncode == 2 and "at least one --harmful or --benign" in res.stderr


@pytest.mark.timeout(240)
def test_cli_fit_tune_writes_a_directory_that_score_reads(tiny_dir, tmp_path):
    h, b = write_sources(tmp_path)
    out = tmp_path / "tuned"
    res = cli("probe", "fit", "--tune", "--model", f"hf:{tiny_dir}", "--harmful", str(h), "--benign", str(b),
               "--tune-layer", "1", "--epochs", "1", "--rank", "2", "--val-fraction", "0.34", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "validation AUC" in res.stdout and "read-out block" in res.stdout
    p = load_probe(out)
    assert isinstance(p, TunedProbe) and p.layer == 1 and p.metrics["fitted_on"]["harmful_requests"] == 6
    res = cli("probe", "score", str(out), HARM[0], "--model", f"hf:{tiny_dir}")
    assert res.returncode == 0 and "p(harmful)" in res.stdout, res.stderr
    res = cli("probe", "fit", "--tune", "--layer", "2", "--model", f"hf:{tiny_dir}", "--harmful", str(h),
               "--benign", str(b), "--out", str(tmp_path / "never"))
    assert res.returncode != 0 and "--tune-layer" in res.stderr and not (tmp_path / "never").exists()
