"""R2D pivot re-tagging: how often the re-tagging modes agree on the same traces.

    python benchmarks/retag.py [--teacher structured | --teacher openai:<model>@<url>]
                               [--endpoint openai:<model>@<url>] [--guard openai:<model>@<url>]
                               [--limit 40] [--json benchmarks/results/retag.json]

Requests: the built-in seed sets (``builtin:harmful``, ``builtin:twins``, ``builtin:borderline``,
``builtin:benign``), taken round-robin in file order up to ``--limit``. R2D traces are written once
(by the offline structured teacher, or by ``--teacher`` through :class:`LLMTeacher` with re-tagging off),
then the same traces are re-tagged by every mode:

* ``written``: the pivots as the teacher wrote them (the reference, no re-tagging);
* ``heuristic``: :class:`HeuristicRetagger` (``--retag heuristic``);
* ``teacher``: :class:`LLMRetagger` over the teacher endpoint (``--retag teacher``): ``--endpoint``,
  by default the ``--teacher`` spec when that is an endpoint;
* ``guard``: :class:`LLMRetagger` over a separate endpoint (``--retag openai:<model>@<url>``).

For every pair of modes, over the traces both labelled: per step, agreement and Cohen's kappa with 95%
intervals from a bootstrap over requests (the steps of one trace are not independent); per trace, the
share with every pivot equal (Wilson 95% interval); all split by harmful/benign. A re-tag that fails
(no valid labels after the repairs, the endpoint failing, a rejected request) is counted per mode and
kind, and that trace is left out of that mode's pairs.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from itertools import combinations
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("builtin:harmful", "builtin:twins", "builtin:borderline", "builtin:benign")
PIVOTS = ("SAFE", "UNSAFE", "RETHINK")
SPLITS = ("all", "harmful", "benign")


# ------------------------------------------------------------------ requests and traces
def load_requests(policy, limit: int | None = None) -> list:
    """TeachRequests from the seed sets, round-robin across them, the first ``limit``."""
    from safethink.data import load_prompts
    from safethink.synth import TeachRequest

    sets = [load_prompts(s) for s in SOURCES]
    merged = [r for group in zip(*sets) for r in group]  # interleaved while all have items
    longest = max(len(s) for s in sets)
    shortest = min(len(s) for s in sets)
    merged += [s[i] for i in range(shortest, longest) for s in sets if i < len(s)]
    if limit is not None:
        merged = merged[:limit]
    return [TeachRequest(item_id=r.id, prompt=r.user_text(), label=r.label,
                         categories=tuple(policy.map_category(r.category)) if r.label == "harmful" else ())
            for r in merged]


def openai_spec(spec: str) -> tuple[str, str]:
    """(model, base_url) of an ``openai:<model>@<url>`` spec; anything else is an error."""
    from safethink.errors import SpecError
    from safethink.models import parse_model_spec

    ms = parse_model_spec(spec)
    if ms.kind != "openai" or not ms.base_url:
        raise SpecError(f"expected an openai:<model>@<url> spec, got {spec!r}")
    return ms.target, ms.base_url


def make_traces(teacher_spec: str, policy, reqs: list, *, concurrency: int, max_tokens: int,
                max_repairs: int, timeout_s: float) -> tuple[dict, dict]:
    """({request id: R2DTrace}, {request id: why the teacher failed})."""
    from safethink.synth import LLMTeacher, StructuredTeacher, TeachFailure

    if teacher_spec == "structured":
        return {r.item_id: t for r, t in zip(reqs, StructuredTeacher(policy).r2d(reqs))}, {}
    model, url = openai_spec(teacher_spec)
    teacher = LLMTeacher(policy, model, url, concurrency=concurrency, max_repairs=max_repairs, retag="none",
                         max_tokens=max_tokens, timeout_s=timeout_s)
    try:
        outs = teacher.attempt("r2d", reqs)
    finally:
        teacher.close()
    traces = {r.item_id: o for r, o in zip(reqs, outs) if not isinstance(o, TeachFailure)}
    failed = {o.item_id: o.error for o in outs if isinstance(o, TeachFailure)}
    return traces, failed


# ------------------------------------------------------------------ re-tagging
def failure_kind(e: Exception) -> str:
    from safethink.errors import EndpointError
    from safethink.synth import StructuredOutputError

    if isinstance(e, StructuredOutputError):
        return "unparseable"
    return "endpoint" if isinstance(e, EndpointError) else "rejected"


def retag_all(retagger, reqs: list, traces: dict, *, concurrency: int = 1) -> dict:
    """Run one re-tagger over every trace: labels per request id, failures per request id, seconds."""
    from safethink.errors import BackendError

    todo = [r for r in reqs if r.item_id in traces]

    def one(req):
        try:
            return req.item_id, list(retagger.retag(req, traces[req.item_id])), None
        except BackendError as e:
            return req.item_id, None, {"kind": failure_kind(e), "error": f"{type(e).__name__}: {e}"[:400]}

    t0 = time.perf_counter()
    if concurrency > 1 and len(todo) > 1:
        with ThreadPoolExecutor(concurrency) as pool:
            outs = list(pool.map(one, todo))
    else:
        outs = [one(r) for r in todo]
    return {"labels": {i: lab for i, lab, _ in outs if lab is not None},
            "failures": {i: f for i, _, f in outs if f is not None},
            "seconds": time.perf_counter() - t0}


# ------------------------------------------------------------------ agreement
def kappa(cm: np.ndarray) -> float:
    """Cohen's kappa from a confusion matrix; NaN when chance agreement is 1 (one label throughout)."""
    n = cm.sum()
    if n == 0:
        return float("nan")
    po = np.trace(cm) / n
    pe = float((cm.sum(0) * cm.sum(1)).sum()) / (n * n)
    return float("nan") if pe >= 1 else float((po - pe) / (1 - pe))


def _cm(a: list[str], b: list[str]) -> np.ndarray:
    cm = np.zeros((len(PIVOTS), len(PIVOTS)), dtype=np.int64)
    for x, y in zip(a, b):
        cm[PIVOTS.index(x), PIVOTS.index(y)] += 1
    return cm


def _num(x: float) -> float | None:
    return None if x != x else round(float(x), 4)


def agreement(pairs: list[tuple[list[str], list[str]]], *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Step and trace agreement of two labellings of the same traces (one (a, b) pair per trace)."""
    from safethink.eval import wilson_interval

    n = len(pairs)
    out: dict = {"traces": n, "steps": sum(len(a) for a, _ in pairs)}
    if n == 0:
        return {**out, "step_agreement": None, "step_agreement_ci": None, "kappa": None, "kappa_ci": None,
                "trace_agreement": None, "trace_agreement_ci": None}
    for a, b in pairs:
        if len(a) != len(b):
            raise ValueError(f"labellings of one trace differ in length: {len(a)} vs {len(b)}")
    cms = np.stack([_cm(a, b) for a, b in pairs])  # one confusion matrix per trace
    total = cms.sum(0)
    same = sum(a == b for a, b in pairs)
    rng = np.random.default_rng(seed)
    boot = cms[rng.integers(0, n, size=(n_boot, n))].sum(1)  # resample requests, not steps
    steps = boot.sum((1, 2))
    acc = np.trace(boot, axis1=1, axis2=2) / steps
    kap = np.array([kappa(m) for m in boot])
    ok = kap[~np.isnan(kap)]
    lo, hi = wilson_interval(same, n)
    return {**out,
            "step_agreement": _num(np.trace(total) / total.sum()),
            "step_agreement_ci": [_num(np.percentile(acc, 2.5)), _num(np.percentile(acc, 97.5))],
            "kappa": _num(kappa(total)),
            "kappa_ci": [_num(np.percentile(ok, 2.5)), _num(np.percentile(ok, 97.5))] if len(ok) else None,
            "kappa_undefined_resamples": int(len(kap) - len(ok)),
            "trace_agreement": _num(same / n), "trace_agreement_ci": [_num(lo), _num(hi)],
            "confusion": {"rows": "first mode", "cols": "second mode", "labels": list(PIVOTS),
                          "counts": total.tolist()}}


def compare(labels: dict[str, dict], reqs: list, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Every pair of modes, split all/harmful/benign, over the traces both modes labelled."""
    out = {}
    for m1, m2 in combinations(labels, 2):
        a, b = labels[m1], labels[m2]
        per = {}
        for split in SPLITS:
            ids = [r.item_id for r in reqs if (split == "all" or r.label == split) and r.item_id in a and r.item_id in b]
            per[split] = agreement([(a[i], b[i]) for i in ids], n_boot=n_boot, seed=seed)
        out[f"{m1}~{m2}"] = per
    return out


def failure_reason(error: str) -> str:
    """The last validation problem of an unparseable reply, numbers as N ('expected N labels ...')."""
    m = re.search(r"\(last: (.*)\)\s*$", error)
    return re.sub(r"\d+", "N", m.group(1))[:120] if m else error.split(":", 1)[0]


def failure_counts(run: dict, reqs: list, traces: dict) -> dict:
    """Failed re-tags per split, by kind and (in JSON only) by the last problem reported."""
    out = {}
    for split in SPLITS:
        ids = [r.item_id for r in reqs if r.item_id in traces and (split == "all" or r.label == split)]
        fails = [run["failures"][i] for i in ids if i in run["failures"]]
        kinds: dict[str, int] = {}
        reasons: dict[str, int] = {}
        for f in fails:
            kinds[f["kind"]] = kinds.get(f["kind"], 0) + 1
            reasons[failure_reason(f["error"])] = reasons.get(failure_reason(f["error"]), 0) + 1
        out[split] = {"traces": len(ids), "failed": len(fails), "by_kind": kinds, "by_reason": reasons}
    return out


# ------------------------------------------------------------------ report
def _pct(x, ci) -> str:
    if x is None:
        return "n/a"
    return f"{100 * x:.1f}" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")


def _kap(x, ci) -> str:
    if x is None:
        return "undef."
    return f"{x:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def table(result: dict) -> str:
    lines = ["| modes | split | traces | steps | step agreement % [95% CI] | kappa [95% CI] | trace agreement % [95% CI] |",
             "|---|---|---|---|---|---|---|"]
    for pair, per in result["pairs"].items():
        if per["all"]["traces"] == 0:
            lines.append(f"| {pair} | all | 0 | 0 | no trace labelled by both | | |")
            continue
        for split, s in per.items():
            lines.append(f"| {pair} | {split} | {s['traces']} | {s['steps']} | "
                         f"{_pct(s['step_agreement'], s['step_agreement_ci'])} | {_kap(s['kappa'], s['kappa_ci'])} | "
                         f"{_pct(s['trace_agreement'], s['trace_agreement_ci'])} |")
    lines += ["", "| mode | re-tagger | split | failed / traces | by kind | seconds |", "|---|---|---|---|---|---|"]
    for mode, info in result["modes"].items():
        for split, f in info["failures"].items():
            secs = f"{info['seconds']:.0f}" if split == "all" else ""
            lines.append(f"| {mode} | {info['by']} | {split} | {f['failed']} / {f['traces']} | "
                         f"{json.dumps(f['by_kind']) if f['by_kind'] else '-'} | {secs} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="structured", help="structured (offline) or openai:<model>@<url>")
    ap.add_argument("--endpoint", help="teacher endpoint for the 'teacher' re-tag mode (default: --teacher "
                                       "when it is an endpoint; without one the mode is left out)")
    ap.add_argument("--guard", help="openai:<model>@<url> for the 'guard' re-tag mode (left out without it)")
    ap.add_argument("--limit", type=int, help="requests in all (round-robin over the four seed sets)")
    ap.add_argument("--concurrency", type=int, default=4, help="requests in flight per endpoint")
    ap.add_argument("--max-repairs", type=int, default=2, help="repairs per re-tag reply (safethink's default: 2)")
    ap.add_argument("--retag-max-tokens", type=int, default=96, help="reply budget of one re-tag call")
    ap.add_argument("--trace-max-tokens", type=int, default=512, help="reply budget of one LLM-teacher trace")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per HTTP request")
    ap.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the requests")
    ap.add_argument("--note", default="", help="what the endpoints serve (stored with the results)")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "retag.json")
    args = ap.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        ap.error("--limit must be at least 1")
    if args.concurrency < 1 or args.max_repairs < 0 or args.bootstrap < 100:
        ap.error("--concurrency must be >= 1, --max-repairs >= 0, --bootstrap >= 100")
    endpoint = args.endpoint or (args.teacher if args.teacher != "structured" else None)
    from safethink.errors import SafethinkError

    try:
        for spec in (args.teacher if args.teacher != "structured" else None, endpoint, args.guard):
            if spec:
                openai_spec(spec)
    except SafethinkError as e:
        ap.error(str(e))

    from safethink.data import default_policy
    from safethink.io import atomic_write_text
    from safethink.synth import ChatClient, HeuristicRetagger, LLMRetagger

    policy = default_policy()
    reqs = load_requests(policy, args.limit)
    t0 = time.perf_counter()
    traces, trace_failed = make_traces(args.teacher, policy, reqs, concurrency=args.concurrency,
                                       max_tokens=args.trace_max_tokens, max_repairs=args.max_repairs,
                                       timeout_s=args.timeout)
    trace_s = time.perf_counter() - t0
    print(f"{len(traces)} traces from {args.teacher} ({len(trace_failed)} failed) in {trace_s:.0f}s", flush=True)

    modes: dict[str, dict] = {}
    labels: dict[str, dict] = {"written": {i: [s.pivot for s in t.steps] for i, t in traces.items()}}
    retaggers: dict[str, tuple[str, object]] = {"heuristic": ("HeuristicRetagger", HeuristicRetagger())}
    clients = []
    for mode, spec in (("teacher", endpoint), ("guard", args.guard)):
        if spec:
            model, url = openai_spec(spec)
            clients.append(ChatClient(model, url, max_tokens=args.retag_max_tokens, timeout_s=args.timeout))
            retaggers[mode] = (f"LLMRetagger({spec})", LLMRetagger(clients[-1], max_repairs=args.max_repairs))
    try:
        for mode, (by, retagger) in retaggers.items():
            run = retag_all(retagger, reqs, traces, concurrency=args.concurrency)
            labels[mode] = run["labels"]
            modes[mode] = {"by": by, "seconds": round(run["seconds"], 1),
                           "failures": failure_counts(run, reqs, traces),
                           "failure_examples": [{"id": i, **f} for i, f in list(run["failures"].items())[:5]]}
            print(f"{mode}: {len(run['labels'])} labelled, {len(run['failures'])} failed in {run['seconds']:.0f}s",
                  flush=True)
    finally:
        for c in clients:
            c.close()

    counts = {s: sum(r.item_id.startswith(s + "/") for r in reqs) for s in SOURCES}
    result = {
        "benchmark": "retag", "date": datetime.now(timezone.utc).date().isoformat(), "machine": machine(),
        "command": shlex.join(["python", "benchmarks/retag.py", *(argv if argv is not None else sys.argv[1:])]),
        "note": args.note,
        "config": {"teacher": args.teacher, "endpoint": endpoint, "guard": args.guard, "limit": args.limit,
                   "concurrency": args.concurrency, "max_repairs": args.max_repairs,
                   "retag_max_tokens": args.retag_max_tokens, "timeout_s": args.timeout, "bootstrap": args.bootstrap},
        "same_endpoint_for_teacher_and_guard": bool(endpoint and endpoint == args.guard),
        "requests": {"total": len(reqs), "harmful": sum(r.label == "harmful" for r in reqs),
                     "benign": sum(r.label == "benign" for r in reqs), "by_source": counts},
        "traces": {"written": len(traces), "failed": len(trace_failed), "seconds": round(trace_s, 1),
                   "failure_examples": [{"id": i, "error": e[:400]} for i, e in list(trace_failed.items())[:5]]},
        "modes": {"written": {"by": args.teacher, "seconds": 0.0,
                              "failures": failure_counts({"failures": {}}, reqs, traces), "failure_examples": []},
                  **modes},
        "pairs": compare(labels, reqs, n_boot=args.bootstrap),
    }
    print(table(result))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
