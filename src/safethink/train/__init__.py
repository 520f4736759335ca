"""Training: SCoT and R2D (with Contrastive Pivot Optimization) on TRL's SFTTrainer + PEFT.

Python API::

    from safethink.train import load_train_config, train
    cfg = load_train_config(preset="cpu-small", overrides={"method": "scot"})
    result = train(cfg, model="smollm2-135m", data="data/scot", out="runs/scot")

Heavy modules (torch, TRL, PEFT) load on first use, not at import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._config import PRESETS, TrainConfig, load_train_config, preset_values

if TYPE_CHECKING:
    from ._collator import SafetyCollator
    from ._merge import merge_run, read_run_info
    from ._run import TrainResult, resolve_base_model, train
    from ._tokens import PivotIds, add_r2d_tokens, grow_embeddings, pivot_ids
    from ._trainer import SafetyTrainer
    from ._trainer_config import SafetySFTConfig

__all__ = [
    "PRESETS", "PivotIds", "SafetyCollator", "SafetySFTConfig", "SafetyTrainer", "TrainConfig", "TrainResult",
    "add_r2d_tokens", "grow_embeddings", "load_train_config", "merge_run", "pivot_ids", "preset_values",
    "read_run_info", "resolve_base_model", "train",
]

_LAZY = {
    "SafetyCollator": "_collator", "merge_run": "_merge", "read_run_info": "_merge", "TrainResult": "_run",
    "resolve_base_model": "_run", "train": "_run", "PivotIds": "_tokens", "add_r2d_tokens": "_tokens",
    "grow_embeddings": "_tokens", "pivot_ids": "_tokens", "SafetyTrainer": "_trainer",
    "SafetySFTConfig": "_trainer_config",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
