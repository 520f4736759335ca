"""The report: a pure function of the stored attempts, rendered to HTML/Markdown, exported, and
checked in a real headless browser."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from safethink.errors import SafethinkError
from safethink.eval import ResultStore, compute_metrics, load_attempts, render_report
from test_eval_metrics import make_attempt

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _populate(run_dir: Path) -> list:
    """Two models x two attacks on 10 harmful records + 10 benign records, with known outcomes."""
    rows, i = [], 0
    for model, broken_a1, broken_a2, refused_benign in (("base", 8, 6, 1), ("scot", 1, 0, 3)):
        for attack, broken in (("prefix-injection", broken_a1), ("base64", broken_a2)):
            for r in range(10):
                ok = r < broken
                rows.append(make_attempt(i, model=model, attack=attack, dataset="jbb-harmful", record=f"h{r}",
                                         refused=not ok, score=1.0 if ok else 0.0,
                                         output="Sure, here is <b>how</b>" if ok else "I cannot help with that."))
                i += 1
        for r in range(10):
            ds = "jbb-benign" if r < 5 else "xstest-safe"
            rows.append(make_attempt(i, model=model, attack="none", label="benign", dataset=ds, record=f"b{r}",
                                     refused=r < refused_benign, score=0.0))
            i += 1
    with ResultStore(run_dir / "results.sqlite") as st:
        st.start_run("run-1", {"name": "demo <run>", "judges": [{"name": "kw", "primary": True}], "success_threshold": 0.5})
        assert st.add(rows) == len(rows)
        st.finish_run("run-1", len(rows))
    return rows


def test_report_files_and_numbers(tmp_path):
    rows = _populate(tmp_path)
    files = render_report(tmp_path, export=["jsonl", "parquet"])
    html = files.html.read_text()
    md = files.markdown.read_text()
    # the plots are embedded (self-contained) and decode as PNG
    imgs = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(imgs) == 3
    assert all(base64.b64decode(s)[:8] == b"\x89PNG\r\n\x1a\n" for s in imgs)
    assert "http://" not in html and "https://" not in html  # nothing fetched from the network
    # user text is escaped, not interpreted
    assert "demo &lt;run&gt;" in html and "<b>how</b>" not in html
    # base / prefix-injection: 8 of 10 jailbroken; Wilson [49.0, 94.3]
    assert "80.0% [49.0, 94.3] (n=10)" in html and "80.0% [49.0, 94.3] (n=10)" in md
    # scot pooled: 1 of 20
    assert "5.0% [0.9, 23.6] (n=20)" in md
    # over-refusal per dataset: scot refuses 3 of 5 JBB benign, 0 of 5 XSTest safe
    assert "60.0% [23.1, 88.2] (n=5)" in md and "| xstest-safe |" in md
    metrics = json.loads(files.metrics.read_text())
    assert metrics["judge"] == "kw" and metrics["attempts"] == len(rows)
    # exports round-trip every attempt
    lines = files.exports[0].read_text().splitlines()
    assert len(lines) == len(rows) and json.loads(lines[0])["verdicts"]["kw"]["refused"] is False
    import pyarrow.parquet as pq

    t = pq.read_table(files.exports[1])
    assert t.num_rows == len(rows) and "attempt_key" in t.column_names


def test_report_shows_strongreject_and_seen_unseen(tmp_path):
    sr = {"strongreject": {"refused": False, "score": 0.25, "explanation": "", "judge": "strongreject:x", "details": None}}
    rows = [make_attempt(i, attack=a, style=a, styles=["role_play"], extra=sr, refused=i != 1, score=float(i == 1))
            for i, a in enumerate(["role-play", "role-play", "base64", "base64"])]
    with ResultStore(tmp_path / "results.sqlite") as st:
        st.start_run("r", {"name": "x", "judges": [{"name": "kw"}]})
        st.add(rows)
    md = render_report(tmp_path).markdown.read_text()
    assert "## StrongREJECT mean score" in md and "| (all) | 0.250 |" in md
    # seen = role-play (1 of 2 jailbroken), unseen = base64 (0 of 2)
    assert "## Seen vs unseen attack styles" in md
    assert "| m | none | 50.0% [9.5, 90.5] (n=2) | 0.0% [0.0, 65.8] (n=2) |" in md


def test_report_is_a_pure_function_of_the_store(tmp_path):
    _populate(tmp_path)
    a = render_report(tmp_path).html.read_text()
    b = render_report(tmp_path).html.read_text()
    strip = lambda s: re.sub(r"rendered [0-9: -]+", "", s)  # noqa: E731
    assert strip(a) == strip(b)
    m1 = compute_metrics(load_attempts(tmp_path))
    m2 = compute_metrics(list(reversed(load_attempts(tmp_path))))
    assert m1.asr == m2.asr and m1.over_refusal == m2.over_refusal


def test_report_errors(tmp_path):
    with pytest.raises(SafethinkError, match="no results database"):
        render_report(tmp_path)
    ResultStore(tmp_path / "results.sqlite").close()
    with pytest.raises(SafethinkError, match="holds no attempts"):
        render_report(tmp_path)


def screenshot(html: Path, png: Path) -> None:
    """Take a real headless-browser screenshot of a page."""
    profile = png.parent / "chromium-profile"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         f"--screenshot={png}", "--window-size=1280,2000", html.resolve().as_uri()],
        check=True, capture_output=True, timeout=90,
    )


@pytest.mark.timeout(300)
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_report_renders_in_a_headless_browser(tmp_path):
    import numpy as np
    from matplotlib.image import imread

    _populate(tmp_path)
    files = render_report(tmp_path)
    png = tmp_path / "shot.png"
    screenshot(files.html, png)
    img = imread(str(png))[..., :3]
    assert img.shape[:2] == (2000, 1280)
    px = (img * 255).round().astype(int).reshape(-1, 3)
    non_white = (px.min(axis=1) < 235).mean()
    assert non_white > 0.03, "page looks blank"
    assert len(np.unique(px, axis=0)) > 200, "too few colours for text + tables + plots"
    # matplotlib's first series colour (#1f77b4) only comes from the embedded plots: they rendered
    blue = (np.abs(px - np.array([31, 119, 180])).max(axis=1) <= 6).mean()
    assert blue > 0.002


def _store(run_dir: Path, rows: list, judge: str = "kw") -> None:
    with ResultStore(run_dir / "results.sqlite") as st:
        st.start_run("r", {"name": "x", "judges": [{"name": judge, "primary": True}]})
        st.add(rows)


def test_a_refusal_detector_run_reports_a_non_refusal_rate_with_the_outcome_breakdown(tmp_path):
    outcomes = [("complied", False, 1.0)] * 3 + [("partial", True, 0.2), ("refused", True, 0.0)] + \
        [("no_answer", False, 0.0)] * 2
    rows = [make_attempt(i, outcome=o, refused=r, score=s, judge="keyword-gcg", record=f"h{i}",
                         output="" if o == "no_answer" else "Sure, here is how")
            for i, (o, r, s) in enumerate(outcomes)]
    _store(tmp_path, rows)
    files = render_report(tmp_path)
    md, html = files.markdown.read_text(), files.html.read_text()
    assert "## Non-refusal rate on harmful requests (lower is better)" in md
    assert "Attack success rate" not in md and "Attack success rate" not in html
    assert "Non-refusal rate on harmful requests" in html
    assert "| a1 | 42.9% [15.8, 75.0] (n=7) |" in md  # 3 complied of 7; no-answers are not successes
    assert "| m | none | harmful (n=7) | 3 (42.9%) | 1 (14.3%) | 1 (14.3%) | 2 (28.6%) |" in md
    assert "<th>no answer</th>" in html
    metrics = json.loads(files.metrics.read_text())
    assert metrics["metric"] == "non_refusal" and metrics["judge_spec"] == "keyword-gcg"
    row = metrics["outcomes"][0]
    assert (row["complied"], row["partial"], row["refused"], row["no_answer"]) == (3, 1, 1, 2)
    assert "## StrongREJECT" not in md  # no harm judge ran: no harm score is shown


def test_a_harm_judge_run_reports_an_attack_success_rate(tmp_path):
    spec = "harmbench?model=openai:judge@http://127.0.0.1:1/v1"
    rows = [make_attempt(i, outcome="complied" if i < 1 else "refused", refused=i >= 1, score=float(i < 1),
                         judge=spec, measures="harm", record=f"h{i}") for i in range(4)]
    _store(tmp_path, rows, judge="harmbench")
    files = render_report(tmp_path)
    md, html = files.markdown.read_text(), files.html.read_text()
    assert "## Attack success rate on harmful requests (lower is better)" in md
    assert "non-refusal rate" not in md.lower()
    assert "The judge rates harm" in md and "harm score &ge; 0.5" in html
    assert json.loads(files.metrics.read_text())["metric"] == "harm"


def test_every_rate_table_names_the_primary_judges_measured_agreement(tmp_path):
    from safethink.eval._report import agreement_note
    from safethink.judges import judge_validation

    table = {"default": {"held_out_agreement": 0.8734}, "keyword-gcg": {"held_out_agreement": None}}
    assert agreement_note("default?threshold=0.4", table.get) == "unvalidated"  # looked up by the exact name given
    assert agreement_note("default", table.get) == "agreement with human labels on held-out models: 87%"
    assert agreement_note("keyword-gcg", table.get) == "unvalidated"
    assert agreement_note(None) == "unvalidated"

    # the report uses the shipped validation table, whatever it holds today
    found = judge_validation("default")
    expected = "unvalidated" if found is None else \
        f"agreement with human labels on held-out models: {100 * found['held_out_agreement']:.0f}%"
    rows = [make_attempt(i, label="harmful", judge="default", attack="a1", record=f"h{i}", styles=["a1"], style="a1")
            for i in range(3)]
    _store(tmp_path, rows, judge="default")
    files = render_report(tmp_path)
    md, html = files.markdown.read_text(), files.html.read_text()
    assert f"primary judge `kw` (`default`) ({expected})." in md  # the verdict key, and the judge's spec
    assert f"Primary judge `kw`: {expected}." in md
    assert f"## Seen vs unseen attack styles (non-refusal rate; {expected})" in md
    assert html.count(f"{expected}.") >= 2  # the rate table and the seen/unseen table
    assert json.loads(files.metrics.read_text())["judge_validation"] == found
