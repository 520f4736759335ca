"""Evaluate a model with an eval spec, render the HTML report and check it in a real headless browser.

Runs (or resumes) the spec, renders report.html / report.md, takes a Chromium screenshot of the
report and checks that the picture is not trivial (page not blank, plots drawn). Prints the headline rate
of every model / defence as a table and writes it, with the run's timing and the screenshot's checks, to
benchmarks/results/report_screenshot.json (``--json``).

    export SAFETHINK_DATA_DIR=../shared/data
    python benchmarks/report_screenshot.py                                  # examples/eval_jbb.yaml, 10 per dataset
    python benchmarks/report_screenshot.py --config my.yaml --limit 50 --out runs/my-eval
    python benchmarks/report_screenshot.py --judge keyword-gcg --judge keyword-jbb   # other judges
    python benchmarks/report_screenshot.py --report-only runs/eval_jbb      # screenshot an existing run

Needs Debian's chromium (``apt-get install -y chromium``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _record import RESULTS, ROOT, pct, record


def screenshot(html: Path, png: Path, chromium: str) -> None:
    profile = png.parent / ".chromium-profile"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         f"--screenshot={png}", "--window-size=1280,2000", html.resolve().as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    shutil.rmtree(profile, ignore_errors=True)


def check_png(png: Path) -> dict[str, float]:
    """Numbers that show the page rendered: size, ink coverage, colours, plot-bar pixels."""
    import numpy as np
    from matplotlib.image import imread

    img = imread(str(png))[..., :3]
    px = (img * 255).round().astype(int).reshape(-1, 3)
    stats = {
        "width": int(img.shape[1]), "height": int(img.shape[0]), "bytes": png.stat().st_size,
        "non_white": float((px.min(axis=1) < 235).mean()),
        "colours": int(len(np.unique(px, axis=0))),
        "plot_blue": float((np.abs(px - np.array([31, 119, 180])).max(axis=1) <= 6).mean()),
    }
    problems = []
    if stats["non_white"] < 0.03:
        problems.append("page looks blank")
    if stats["colours"] < 200:
        problems.append("too few colours")
    if stats["plot_blue"] < 0.002:
        problems.append("no plot bars visible")
    if problems:
        raise SystemExit(f"{png}: screenshot check failed: {', '.join(problems)} ({stats})")
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "examples" / "eval_jbb.yaml"))
    ap.add_argument("--out", default=None, help="run directory (default: the spec's out)")
    ap.add_argument("--limit", type=int, default=10, help="records per dataset")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"),
                    help="offline dataset copies (sets SAFETHINK_DATA_DIR unless already set)")
    ap.add_argument("--judge", action="append", default=None,
                    help="judge name(s) to use instead of the spec's (repeatable; the first is primary)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (on a shared, oversubscribed CPU 1 thread can be ~10x faster)")
    ap.add_argument("--report-only", default=None, help="skip the run; screenshot this run directory")
    ap.add_argument("--screenshot", default=None, help="PNG path (default: <run>/report.png)")
    ap.add_argument("--json", default=str(RESULTS / "report_screenshot.json"), help="results file to write")
    args = ap.parse_args()

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("chromium is not installed: apt-get install -y chromium")
    if Path(args.data_dir).is_dir():
        os.environ.setdefault("SAFETHINK_DATA_DIR", args.data_dir)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from safethink.eval import load_spec, render_report, run_eval

    info: dict[str, object] = {}
    if args.report_only:
        run_dir = Path(args.report_only)
    else:
        spec = load_spec(args.config).with_overrides(out=args.out, limit=args.limit)
        if args.judge:
            from safethink.eval import JudgeEntry

            spec = spec.model_copy(update={"judges": [JudgeEntry(name=j, primary=i == 0) for i, j in enumerate(args.judge)]})
        run_dir = spec.out_dir
        t0 = time.perf_counter()
        last = [0.0]

        def progress(ev) -> None:
            if ev.kind in ("plan", "load", "cell") or time.perf_counter() - last[0] > 30:
                last[0] = time.perf_counter()
                print(f"[{time.perf_counter() - t0:7.1f}s] {ev.kind} {ev.cell or ev.message} "
                      f"{ev.total or ev.n or ''}", file=sys.stderr, flush=True)

        res = run_eval(spec, progress=progress)
        info.update(run_id=res.run_id, planned=res.planned, added=res.added, skipped=res.skipped,
                    seconds=round(time.perf_counter() - t0, 1),
                    attacks=len({a.key for a in spec.attacks}), datasets=[d.display for d in spec.datasets])
    t1 = time.perf_counter()
    files = render_report(run_dir, export=["jsonl"])
    info["report_seconds"] = round(time.perf_counter() - t1, 2)
    png = Path(args.screenshot) if args.screenshot else run_dir / "report.png"
    screenshot(files.html, png, chromium)
    info["screenshot"] = {"path": str(png), **check_png(png)}
    m = json.loads(files.metrics.read_text())  # the report's own numbers (primary judge of the spec)
    info["judge"] = m["judge"]
    info["report"] = str(files.html)
    refusal = {(r["model"], r["defence"], r["dataset"]): r for r in m["over_refusal"]}
    sets = sorted({k[2] for k in refusal}, key=lambda d: (d == "(all)", d))  # each benign set, then all of them
    rows = [{"model": r["model"], "defence": r["defence"], "asr": r,
             "asr_per_attack": {a["attack"]: round(a["rate"], 3) for a in m["asr"]
                                if (a["model"], a["defence"]) == (r["model"], r["defence"]) and a["attack"] != "(all)"},
             "over_refusal": {d: refusal[(r["model"], r["defence"], d)] for d in sets
                              if (r["model"], r["defence"], d) in refusal}}
            for r in m["asr"] if r["attack"] == "(all)"]

    def rate(x: dict | None) -> str:
        return "-" if x is None else f"{pct(x['rate'], 1)} [{pct(x['ci_low'], 1)}-{pct(x['ci_high'], 1)}] (n={x['n']})"

    columns = {"model": "model", "defence": "defence",
               f"{m.get('metric_name') or 'ASR'}, all attacks": lambda r: rate(r["asr"])}
    for d in sets:
        columns[f"refused: {d}"] = lambda r, d=d: rate(r["over_refusal"].get(d))
    record("report_screenshot", rows, out=args.json, columns=columns, title=f"{run_dir} (judge {m['judge']})", **info)


if __name__ == "__main__":
    main()
