"""Experiments as declarative presets: a pipeline config (YAML, validated strictly) describes the split of the
built-in seed set, the training mixes and arms, the probes, and the evaluation (variants, attacks, datasets,
judges, generation); :func:`run_pipeline` runs its stages in order, each cached in the output directory.

``safethink run PRESET|FILE.yaml`` runs one; ``safethink quickstart`` runs the shipped ``quickstart`` preset.
The stage functions are public for scripts that assemble their own runs (``benchmarks/``)."""

from __future__ import annotations

from ._config import (
    Arm, Dataset, Mix, PipelineConfig, VariantEntry, load_pipeline, preset_names, preset_text, quickstart_sets,
)
from ._eval import (
    SummaryRow, eval_specs, realistic_eval_dataset, run_evaluations, spec_dicts, split_eval_datasets, summarise,
)
from ._probes import (  # noqa: F401 - helpers scripts and tests use by these names
    _fitted_on, _negative_count, _negative_options, _probe_sources, _spare_pairs,
)
from ._probes import fit_quickstart_probe, fit_quickstart_wrapper
from ._run import Plan, StageClock, Summary, run_pipeline, run_plan, run_quickstart
from ._settings import (
    DEFAULT_ATTACKS, FAST_ATTACKS, PLAIN_ATTACKS, REALISTIC_TEST, REALISTIC_TRAIN, TRANSFORM_ATTACKS, VARIANTS,
    WRAPPER_ATTACKS, StageProgress, QuickstartConfig, Variant, resolve_variants,
)
from ._stages import (  # noqa: F401 - the private helpers for scripts and tests
    _retain_ratio, _split_rows, _StepProgress, build_training_sets, count_rows, split_seed_set, split_sources,
    train_adapter, train_adapters,
)

__all__ = [
    "DEFAULT_ATTACKS", "FAST_ATTACKS", "PLAIN_ATTACKS", "REALISTIC_TEST", "REALISTIC_TRAIN", "TRANSFORM_ATTACKS",
    "VARIANTS", "WRAPPER_ATTACKS", "Arm", "Dataset", "Mix", "PipelineConfig", "Plan", "StageProgress",
    "QuickstartConfig", "StageClock", "Summary", "SummaryRow", "Variant", "VariantEntry", "build_training_sets",
    "count_rows", "eval_specs", "fit_quickstart_probe", "fit_quickstart_wrapper", "load_pipeline", "preset_names",
    "preset_text", "quickstart_sets", "realistic_eval_dataset", "resolve_variants", "run_evaluations", "run_pipeline",
    "run_plan", "run_quickstart", "spec_dicts", "split_eval_datasets", "split_seed_set", "split_sources", "summarise",
    "train_adapter", "train_adapters",
]
