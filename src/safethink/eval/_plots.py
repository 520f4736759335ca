"""Report figures (matplotlib, headless), returned as base64 PNG strings for embedding."""

from __future__ import annotations

import base64
import io
from typing import Any

from ..errors import MissingExtraError
from ._metrics import ALL, METRIC_NAMES, METRIC_SHORT, Metrics, Rate


def _plt() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise MissingExtraError("matplotlib", "report", "the evaluation report") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _grouped_bars(title: str, groups: list[str], series: list[tuple[str, list[Rate | None]]], ylabel: str) -> str:
    """Bars per group, one colour per series, with Wilson 95% error bars."""
    plt = _plt()
    import numpy as np

    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(groups) * max(1, len(series)) + 2), 4.2))
    x = np.arange(len(groups))
    for j, (name, rates) in enumerate(series):
        vals = [r.rate if r and r.n else 0.0 for r in rates]
        lo = [max(0.0, r.rate - r.ci[0]) if r and r.n else 0.0 for r in rates]
        hi = [max(0.0, r.ci[1] - r.rate) if r and r.n else 0.0 for r in rates]
        ax.bar(x + (j - (len(series) - 1) / 2) * width, vals, width, yerr=[lo, hi], capsize=2, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(groups, rotation=35 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8, loc="upper right")
    return _png(fig)


def configs(m: Metrics) -> list[tuple[str, str]]:
    """(model, defence) pairs present in the results, in spec order."""
    seen = {k[:2] for k in m.asr} | {k[:2] for k in m.over_refusal}
    return [(mo, d) for mo in m.models for d in m.defences if (mo, d) in seen]


def _cfg_name(mo: str, d: str, m: Metrics) -> str:
    return mo if len(m.defences) == 1 else f"{mo} / {d}"


def asr_per_attack(m: Metrics) -> str | None:
    if not m.attacks:
        return None
    series = [(_cfg_name(mo, d, m), [m.asr.get((mo, d, a)) for a in m.attacks + [ALL]]) for mo, d in configs(m)]
    title = f"{METRIC_NAMES[m.metric].capitalize()} per attack (Wilson 95%)"
    return _grouped_bars(title, m.attacks + ["overall"], series, METRIC_SHORT[m.metric])


def refusal_rates(m: Metrics) -> str | None:
    ds = [d for d in m.datasets if any(k[2] == d for k in m.over_refusal)]
    if not ds:
        return None
    series = [(_cfg_name(mo, d, m), [m.over_refusal.get((mo, d, x)) for x in ds]) for mo, d in configs(m)]
    return _grouped_bars("Over-refusal on benign / safe prompts (lower is better)", ds, series, "refusal rate")


def before_after(m: Metrics) -> str | None:
    """Overall ASR (or non-refusal rate) next to over-refusal for every model/defence: the trade-off in one picture."""
    cfgs = configs(m)
    if not cfgs:
        return None
    names = [_cfg_name(mo, d, m) for mo, d in cfgs]
    series = [
        (f"{METRIC_SHORT[m.metric]} (all attacks)", [m.asr.get((mo, d, ALL)) for mo, d in cfgs]),
        ("over-refusal (all benign)", [m.over_refusal.get((mo, d, ALL)) for mo, d in cfgs]),
    ]
    return _grouped_bars(f"Before / after: {METRIC_SHORT[m.metric]} vs over-refusal", names, series, "rate")


def all_figures(m: Metrics) -> list[tuple[str, str]]:
    out = []
    for title, fn in ((f"{METRIC_SHORT[m.metric]} per attack", asr_per_attack), ("Refusal rates", refusal_rates),
                      ("Before / after", before_after)):
        png = fn(m)
        if png:
            out.append((title, png))
    return out
