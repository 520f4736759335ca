"""The pipeline's first stages: split the built-in seed set, build the training sets, train the adapters.

Each stage is cached in the output directory: a stage whose files are there is not run again."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..io import write_jsonl
from ._settings import StageProgress, QuickstartConfig, _quiet


# ------------------------------------------------------------------ 1. split
def split_seed_set(cfg: QuickstartConfig) -> dict[str, Path]:
    """Write train / held-out JSONL files of the built-in seed set (deterministic under the seed)."""
    from ..data import load_prompts

    d = cfg.out / "splits"
    names = ("harmful_train", "twins_train", "benign_train", "borderline_train",
             "harmful_eval", "twins_eval", "benign_eval", "borderline_eval")
    paths = {n: d / f"{n}.jsonl" for n in names}
    if all(p.is_file() for p in paths.values()):
        return paths
    rng = random.Random(cfg.seed)
    harmful = load_prompts("builtin:harmful")
    twins = {r.meta.get("twin_of"): r for r in load_prompts("builtin:twins")}
    pairs = [(h, twins.get(h.meta.get("seed_id"))) for h in harmful]
    rng.shuffle(pairs)
    n_eval = max(1, round(len(pairs) * cfg.eval_fraction))
    # Hold out pairs evenly over categories so every rule is tested.
    by_cat: dict[str, list] = {}
    for p in pairs:
        by_cat.setdefault(p[0].category or "?", []).append(p)
    eval_pairs: list = []
    while len(eval_pairs) < n_eval and any(by_cat.values()):
        for cat in sorted(by_cat):
            if by_cat[cat] and len(eval_pairs) < n_eval:
                eval_pairs.append(by_cat[cat].pop())
    eval_ids = {h.id for h, _ in eval_pairs}
    train_pairs = [p for p in pairs if p[0].id not in eval_ids][:cfg.train_harmful]

    def split(records):
        records = list(records)
        rng.shuffle(records)
        k = max(1, round(len(records) * cfg.eval_fraction))
        return records[k:], records[:k]

    benign_tr, benign_ev = split(load_prompts("builtin:benign"))
    border_tr, border_ev = split(load_prompts("builtin:borderline"))
    # Training mix: every harmful request with its benign twin (same topic, benign intent), plus
    # ordinary and safe-but-scary requests, so the model learns intent rather than topic.
    n_extra = max(1, round(len(train_pairs) * cfg.extra_benign_ratio))
    benign_tr, border_tr = benign_tr[:n_extra], border_tr[:n_extra]
    content = {
        "harmful_train": _split_rows([h for h, _ in train_pairs], "harmful"),
        "twins_train": _split_rows([t for _, t in train_pairs], "benign"),
        "benign_train": _split_rows(benign_tr, "benign"),
        "borderline_train": _split_rows(border_tr, "benign"),
        "harmful_eval": _split_rows([h for h, _ in eval_pairs], "harmful"),
        "twins_eval": _split_rows([t for _, t in eval_pairs], "benign"),
        "benign_eval": _split_rows(benign_ev, "benign"),
        "borderline_eval": _split_rows(border_ev, "benign"),
    }
    for name, rs in content.items():
        write_jsonl(paths[name], rs)
    return paths


def _split_rows(records, label: str) -> list[dict[str, Any]]:
    """Split-file rows of seed records; twin_of pairs a twin with its harmful request (the probe guard
    keeps a pair in one CV fold)."""
    return [{"id": r.meta.get("seed_id", r.id), "prompt": r.prompt, "label": label, "category": r.category,
             **({"twin_of": r.meta["twin_of"]} if r.meta.get("twin_of") else {})}
            for r in records if r]


# ------------------------------------------------------------------ 2. data
def split_sources(splits: dict[str, Path]) -> tuple[list[str], list[str]]:
    """(harmful, benign) training sources of the seed-set split."""
    return ([str(splits["harmful_train"])],
            [str(splits["twins_train"]), str(splits["borderline_train"]), str(splits["benign_train"])])


def build_training_sets(cfg: QuickstartConfig, harmful: list[str], benign: list[str], progress: StageProgress = _quiet,
                        *, retain_ratio: float = 1.0, limit: int | None = None, benign_limit: int | None = None,
                        data_dir: str | None = None, check_eval_overlap: bool = False,
                        methods: tuple[str, ...] = ("scot", "r2d"), tag: str = "", drop_eval_overlap: bool = False,
                        overlap_threshold: float = 0.8) -> dict[str, Path]:
    """SCoT and R2D sets from the same prompts; both share the cached self-distilled answers.

    The sets land in ``out/data/<method><tag>``; ``tag`` names a variant of the default mix."""
    from ..synth import BuildConfig, build_dataset, parse_styles

    out = {}
    for method in methods:
        bc = BuildConfig(
            method=method, harmful=harmful, benign=benign, teacher="structured", model=cfg.model, seed=cfg.seed,
            evolve=parse_styles(cfg.evolve), retain_ratio=retain_ratio, limit=limit, benign_limit=benign_limit,
            data_dir=data_dir, max_new_tokens=cfg.retain_tokens, check_eval_overlap=check_eval_overlap,
            drop_eval_overlap=drop_eval_overlap, overlap_threshold=overlap_threshold,
        )
        dest = cfg.out / "data" / f"{method}{tag}"
        build_dataset(bc, dest, cache_dir=cfg.out / "cache" / "retain",
                      progress=lambda what, done, total, m=method: progress(f"data {m}: {what}", done, total))
        out[method] = dest
    return out


def count_rows(path: Path) -> int:
    """Records in a JSONL file of the split."""
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def _retain_ratio(splits: dict[str, Path]) -> float:
    """The ratio that makes the builder keep every benign training prompt of the split."""
    benign = sum(count_rows(splits[k]) for k in ("twins_train", "borderline_train", "benign_train"))
    return benign / max(1, count_rows(splits["harmful_train"]))


# ------------------------------------------------------------------ 3. train
def train_adapters(cfg: QuickstartConfig, data: dict[str, Path], progress: StageProgress = _quiet) -> dict[str, Path]:
    return {method: train_adapter(cfg, method, data[method], cfg.out / "runs" / method, progress=progress)
            for method in ("scot", "r2d")}


def train_adapter(cfg: QuickstartConfig, method: str, data: Path, dest: Path, overrides: dict[str, Any] | None = None,
                  progress: StageProgress = _quiet, *, preset: str = "cpu-small") -> Path:
    """One run of a training preset (cached: a finished run in ``dest`` is kept): ``cfg``'s epochs, seed and
    ``train_overrides``, then ``overrides``, over the preset."""
    from ..train import load_train_config, train

    if (dest / "safethink_run.json").is_file():
        return dest
    merged = {"method": method, "epochs": cfg.epochs, "seed": cfg.seed, **cfg.train_overrides, **(overrides or {})}
    tc = load_train_config(preset=preset, overrides=merged)
    label = f"train {dest.name}"
    progress(label, 0, 0)
    train(tc, model=cfg.model, data=data, out=dest, keep_checkpoints=False,
          callbacks=[_StepProgress(lambda d, t: progress(label, d, t))])
    return dest


def _StepProgress(fn: Callable[[int, int], None]) -> Any:
    """A TrainerCallback that reports optimizer steps to ``fn(done, total)``."""
    from transformers import TrainerCallback

    class StepProgress(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            fn(state.global_step, state.max_steps)

    return StepProgress()
