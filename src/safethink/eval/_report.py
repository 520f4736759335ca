"""The report: HTML (self-contained, plots embedded) and Markdown, plus JSONL/Parquet exports.

Reporting is a pure function of the stored attempts: the same results file always renders the
same report (apart from the generation timestamp line).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from ..errors import MissingExtraError, SafethinkError
from ..io import atomic_write_text
from ..judges._base import OUTCOMES
from ..judges._validation import judge_validation
from ._metrics import ALL, METRIC_NAMES, METRIC_SHORT, Metrics, Rate, compute_metrics, is_jailbroken, is_refused
from ._store import Attempt, open_store


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    markdown: Path
    metrics: Path
    exports: tuple[Path, ...] = ()


def _pct(r: Rate | None) -> str:
    if r is None or not r.n:
        return "-"
    lo, hi = r.ci
    return f"{100 * r.rate:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] (n={r.n})"


def _settings(run_dir: Path) -> tuple[str, float, str, list[dict[str, Any]]]:
    """The primary judge key, success threshold and run name from the latest recorded run."""
    with open_store(run_dir) as st:
        runs = st.runs()
    if not runs:
        return "", 0.5, "eval", []
    for r in runs:
        r["started_at"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["started"]))
    spec = runs[-1]["spec"]
    judges = spec.get("judges") or []
    prim = next((j for j in judges if j.get("primary")), judges[0] if judges else {})
    key = prim.get("label") or prim.get("name") or ""
    return key, float(spec.get("success_threshold", 0.5)), spec.get("name", "eval"), runs


def load_attempts(run_dir: str | Path) -> list[Attempt]:
    with open_store(run_dir) as st:
        return st.attempts()


def agreement_note(spec: str | None, lookup: Callable[[str], dict[str, Any] | None] = judge_validation) -> str:
    """How far the judge that produced a rate can be trusted: its measured agreement with human labels on
    models it was not fitted or chosen on, or "unvalidated"."""
    found = lookup(spec) if spec else None
    if not found or found.get("held_out_agreement") is None:
        return "unvalidated"
    return f"agreement with human labels on held-out models: {100 * float(found['held_out_agreement']):.0f}%"


def _count(k: int, n: int) -> str:
    return f"{k} ({100 * k / n:.1f}%)" if n else "-"


def tables(m: Metrics) -> dict[str, Any]:
    """Rows for the templates (strings already formatted)."""
    from ._plots import configs

    cfgs = configs(m)
    # One row per attack and one column per model/defence: attacks are many, configurations few.
    cfg_names = [f"{mo} / {d}" for mo, d in cfgs]
    asr_rows = [{"attack": a, "cells": [_pct(m.asr.get((mo, d, a))) for mo, d in cfgs]} for a in m.attacks]
    asr_total = {"overall": [_pct(m.asr.get((mo, d, ALL))) for mo, d in cfgs],
                 "any": [_pct(m.any_attack.get((mo, d))) for mo, d in cfgs]}
    ds = [x for x in m.datasets if any(k[2] == x for k in m.over_refusal)]
    ref_rows = [{"model": mo, "defence": d, "cells": [_pct(m.over_refusal.get((mo, d, x))) for x in ds],
                 "overall": _pct(m.over_refusal.get((mo, d, ALL))), "answer": _pct(m.benign_answer.get((mo, d)))}
                for mo, d in cfgs]
    sr_rows = [{"attack": a, "cells": [_num(m.strongreject.get((mo, d, a))) for mo, d in cfgs]}
               for a in m.attacks + [ALL]] if m.strongreject else []
    su_rows = [{"model": mo, "defence": d, "seen": _pct(m.seen_unseen.get((mo, d, "seen"))),
                "unseen": _pct(m.seen_unseen.get((mo, d, "unseen")))}
               for mo, d in cfgs if (mo, d, "seen") in m.seen_unseen or (mo, d, "unseen") in m.seen_unseen]
    act_rows = [{"model": k[0], "defence": k[1], "action": k[2], "count": v} for k, v in sorted(m.guard_actions.items())]
    out_rows = [{"model": mo, "defence": d, "label": lab, "n": c.n,
                 "cells": [_count(getattr(c, o), c.n) for o in OUTCOMES]}
                for mo, d in cfgs for lab in ("harmful", "benign") if (c := m.outcomes.get((mo, d, lab)))]
    leak_rows = [{"model": mo, "defence": d, "flagged": _pct(m.leak_flagged.get((mo, d))),
                  "all": _pct(m.leak_all.get((mo, d)))} for mo, d in cfgs if (mo, d) in m.leak_all]
    return {"attacks": m.attacks, "cfg_names": cfg_names, "asr_total": asr_total, "ref_datasets": ds, "asr_rows": asr_rows, "ref_rows": ref_rows,
            "sr_rows": sr_rows, "su_rows": su_rows, "act_rows": act_rows, "outcome_rows": out_rows, "leak_rows": leak_rows,
            "outcome_names": [o.replace("_", " ") for o in OUTCOMES],
            "metric": m.metric, "metric_name": METRIC_NAMES[m.metric], "metric_short": METRIC_SHORT[m.metric],
            "agreement": agreement_note(m.judge_spec)}


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _examples(attempts: Sequence[Attempt], judge: str, threshold: float, metric: str,
              limit: int = 12) -> list[dict[str, str]]:
    """A few counted successes (jailbreaks, or non-refusals when the judge only detects refusals) and a
    few over-refusals, for a human to read."""
    jb = _spread([a for a in attempts if is_jailbroken(a, judge, threshold)], limit // 2)
    orf = _spread([a for a in attempts if a.label == "benign" and is_refused(a, judge)], limit // 2)
    success = "jailbreak" if metric == "harm" else "non-refusal"
    out = []
    for kind, css, rows in ((success, "jailbreak", jb), ("over-refusal", "over-refusal", orf)):
        for a in rows:
            out.append({"kind": kind, "css": css, "model": a.model_name, "defence": a.defence_name,
                        "attack": a.attack_name, "dataset": a.dataset, "record": a.record_id,
                        "prompt": _clip(a.behaviour, 300), "answer": _clip(a.decoded_output, 600)})
    return out


def _spread(rows: list[Attempt], n: int) -> list[Attempt]:
    """Up to n rows, one per (model, defence, attack, dataset) first, so examples are varied."""
    first: dict[tuple[str, str, str, str], Attempt] = {}
    for a in rows:
        first.setdefault((a.model_name, a.defence_name, a.attack_name, a.dataset), a)
    picked = list(first.values())[:n]
    chosen = {id(a) for a in picked}
    return picked + [a for a in rows if id(a) not in chosen][: n - len(picked)]


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[:n] + " [...]"


def render_report(run_dir: str | Path, *, export: Sequence[Literal["jsonl", "parquet"]] = (),
                  out_dir: str | Path | None = None) -> ReportFiles:
    """Write ``report.html``, ``report.md`` and ``metrics.json`` (and exports).

    ``run_dir`` is the run directory (or its results file); files go to ``out_dir``, default the
    run directory.
    """
    run_dir = Path(run_dir)
    dest = Path(out_dir) if out_dir else (run_dir if run_dir.is_dir() else run_dir.parent)
    judge, threshold, name, runs = _settings(run_dir)
    attempts = load_attempts(run_dir)
    if not attempts:
        raise SafethinkError(f"{run_dir}: the results database holds no attempts yet")
    if judge and not any(judge in a.verdicts for a in attempts):
        judge = ""  # the spec's primary judge never ran on these rows: fall back to the stored first verdict
    m = compute_metrics(attempts, judge=judge or None, threshold=threshold)
    ctx = {"name": name, "metrics": m, "t": tables(m), "judge": m.judge, "judge_spec": m.judge_spec,
           "threshold": threshold, "attempts": len(attempts), "runs": runs, "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
           "models": _model_rows(attempts), "examples": _examples(attempts, m.judge or "", threshold, m.metric)}
    from ._plots import all_figures

    ctx["figures"] = all_figures(m)
    html = _template("report.html.j2", autoescape=True).render(**ctx)
    md = _template("report.md.j2", autoescape=False).render(**ctx)
    files = ReportFiles(html=dest / "report.html", markdown=dest / "report.md", metrics=dest / "metrics.json")
    atomic_write_text(files.html, html)
    atomic_write_text(files.markdown, md)
    metrics = {**m.to_json(), "judge_validation": judge_validation(m.judge_spec) if m.judge_spec else None}
    atomic_write_text(files.metrics, json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
    paths = tuple(export_attempts(attempts, dest / f"attempts.{fmt}", fmt) for fmt in export)
    return ReportFiles(files.html, files.markdown, files.metrics, paths)


def _model_rows(attempts: Sequence[Attempt]) -> list[dict[str, str]]:
    seen: dict[tuple[str, str], dict[str, str]] = {}
    for a in attempts:
        seen.setdefault((a.model_name, a.adapter_hash), {
            "name": a.model_name, "spec": a.model_spec, "adapter": a.adapter or "-",
            "hash": a.adapter_hash[:12] or "-", "styles": ", ".join(a.model_styles) or "-"})
    return list(seen.values())


def _template(name: str, *, autoescape: bool) -> Any:
    import jinja2

    text = resources.files("safethink.eval").joinpath("templates", name).read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=autoescape, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.from_string(text)


def export_attempts(attempts: Sequence[Attempt], path: str | Path, fmt: Literal["jsonl", "parquet"]) -> Path:
    """Every attempt as one JSONL line or one Parquet row (JSON-valued columns as JSON strings)."""
    path = Path(path)
    rows = [a.to_json() for a in attempts]
    if fmt == "jsonl":
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        return path
    if fmt != "parquet":
        raise SafethinkError(f"unknown export format {fmt!r}; expected jsonl or parquet")
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingExtraError("pyarrow", "report", "Parquet export") from None
    flat = [{k: (json.dumps(v, ensure_ascii=False, sort_keys=True) if isinstance(v, (dict, list)) else v)
             for k, v in r.items()} for r in rows]
    table = pa.Table.from_pylist(flat)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, str(tmp))
    tmp.replace(path)
    return path
