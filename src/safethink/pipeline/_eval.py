"""The pipeline's evaluation and report stages: eval specs per row of the table, running them into one
results store, and the before/after table computed from the stored attempts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._settings import REALISTIC_TEST, VARIANTS, StageProgress, QuickstartConfig, Variant, _quiet


# ------------------------------------------------------------------ 5. eval
def split_eval_datasets(cfg: QuickstartConfig, splits: dict[str, Path]) -> list[dict[str, Any]]:
    """The held-out parts of the seed set as eval-spec dataset entries."""
    return [
        {"source": str(splits["harmful_eval"]), "label": "harmful", "limit": cfg.eval_harmful, "name": "held-out harmful"},
        {"source": str(splits["twins_eval"]), "label": "benign", "limit": cfg.eval_benign, "name": "benign twins"},
        {"source": str(splits["benign_eval"]), "label": "benign", "limit": cfg.eval_benign, "name": "ordinary"},
        {"source": str(splits["borderline_eval"]), "label": "benign", "limit": cfg.eval_benign, "name": "safe-but-scary"},
        realistic_eval_dataset(cfg.eval_realistic),
    ]


def realistic_eval_dataset(limit: int | None = None) -> dict[str, Any]:
    """:data:`REALISTIC_TEST` as an eval-spec benign dataset named "realistic" (``limit``: a sample of it). It is
    not part of the seed split: nothing of the quickstart is fitted or tuned on it."""
    return {"source": REALISTIC_TEST, "label": "benign", "name": "realistic",
            **({"limit": limit} if limit is not None else {})}


def spec_dicts(cfg: QuickstartConfig, datasets: list[dict[str, Any]], runs: dict[str, Path],
               variants: tuple[Variant, ...] = VARIANTS, judges: list[dict[str, Any]] | None = None
               ) -> list[dict[str, Any]]:
    """One eval spec (as the dict :func:`safethink.eval.parse_spec` takes) per variant, all writing to the same
    results store ``out/eval``. What they hold makes the stored attempts' keys, so a run resumed from an output
    directory answers again only what changed."""
    specs = []
    for v in variants:
        model = {"spec": cfg.model, "name": v.name.split(" + ")[0]}
        if v.adapter:
            run = Path(runs[v.adapter])
            if (run / "config.json").is_file() and not (run / "adapter_config.json").is_file():
                model["spec"] = f"hf:{run}"  # a full fine-tuning run holds a whole model
            else:
                model["adapter"] = str(run)
        specs.append({
            "name": "quickstart", "models": [model],
            "defences": [{"guard": v.guard, "args": v.guard_args, "name": v.name}],
            "attacks": [{"name": a} for a in cfg.attacks], "datasets": datasets,
            "judges": judges or [{"name": "default", "primary": True}],
            "generation": {"max_new_tokens": cfg.max_new_tokens, "batch_size": cfg.gen_batch_size},
            "seed": cfg.seed, "out": str(cfg.out / "eval"),
        })
    return specs


def eval_specs(cfg: QuickstartConfig, datasets: list[dict[str, Any]], runs: dict[str, Path],
               variants: tuple[Variant, ...] = VARIANTS, judges: list[dict[str, Any]] | None = None) -> list[Any]:
    """One parsed eval spec per variant (:func:`spec_dicts`), all writing to the same results store."""
    from ..eval import parse_spec

    return [parse_spec(d, source="quickstart") for d in spec_dicts(cfg, datasets, runs, variants, judges)]


def run_evaluation(spec: dict[str, Any], progress: StageProgress = _quiet) -> Path:
    """One row's eval spec (a dict of :func:`spec_dicts`, so it travels to a worker process as plain data)."""
    from ..eval import parse_spec

    return run_evaluations([parse_spec(spec, source="quickstart")], progress)


def run_evaluations(specs: list[Any], progress: StageProgress = _quiet) -> Path:
    from ..eval import run_eval

    for spec in specs:
        name = spec.defences[0].display
        state = {"done": 0, "total": 0}

        def on_event(e, name=name, state=state):
            if e.kind == "plan":
                state["total"], state["done"] = e.total, e.done
            elif e.kind == "advance":
                state["done"] += e.n
            progress(f"eval {name}", state["done"], state["total"])

        run_eval(spec, progress=on_event)
    return Path(specs[0].out)


# ------------------------------------------------------------------ 6. report
@dataclass
class SummaryRow:
    variant: str
    asr: dict[str, float]
    """attack -> ASR on held-out harmful prompts."""
    asr_all: float
    asr_ci: tuple[float, float]
    over_refusal: dict[str, float]
    """benign set -> refusal rate."""
    benign_answer: float


def summarise(eval_dir: Path, variants: tuple[Variant, ...] = VARIANTS) -> tuple[list[SummaryRow], list[str], list[str]]:
    """The before/after table, computed from the stored attempts (a pure function of the log)."""
    from ..eval import compute_metrics, load_attempts

    m = compute_metrics(load_attempts(eval_dir))
    rows = []
    attacks = [a for a in m.attacks]
    sets = [d for d in m.datasets if any(k[2] == d for k in m.over_refusal)]
    for v in variants:
        pairs = [(mo, de) for (mo, de, at) in m.asr if de == v.name]
        if not pairs:
            continue
        mo, de = pairs[0]
        allr = m.asr[(mo, de, "(all)")]
        rows.append(SummaryRow(
            variant=v.name,
            asr={a: m.asr[(mo, de, a)].rate for a in attacks if (mo, de, a) in m.asr},
            asr_all=allr.rate, asr_ci=allr.ci,
            over_refusal={s: m.over_refusal[(mo, de, s)].rate for s in sets if (mo, de, s) in m.over_refusal},
            benign_answer=m.benign_answer[(mo, de)].rate if (mo, de) in m.benign_answer else float("nan"),
        ))
    return rows, attacks, sets
