"""The user-facing training config (YAML / presets / CLI overrides), validated on load.

Layering, lowest first: field defaults < ``--preset`` < ``--config FILE.yaml`` < CLI options.
An unknown key anywhere is an error that names the file and the key.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import InputError

Method = Literal["scot", "r2d", "sft"]
PRESETS = ("cpu-small", "scot-paper", "r2d-paper")


class TrainConfig(BaseModel):
    """Everything that decides a training run. Field docs are the reference (see docs/training.md)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    method: Method = Field("scot", description="scot: SCoT CE with refusal/retain weighting; r2d: CE + CPO "
                           "with pivot tokens; sft: plain assistant-only CE.")
    # --- what is trained
    full_ft: bool = Field(False, description="Train every weight instead of a LoRA adapter.")
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha (scale = alpha / r).")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    lora_targets: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt (e.g. [q_proj, v_proj]) or 'all-linear'.")
    new_tokens: Literal["trainable_tokens", "modules_to_save"] = Field(
        "trainable_tokens", description="R2D with LoRA: how the pivot/think token rows are trained. "
        "trainable_tokens trains only those rows of the embedding and output matrices (small adapter); "
        "modules_to_save trains full copies of both matrices.")
    # --- optimisation
    epochs: float = Field(2.0, gt=0)
    max_steps: int = Field(-1, description="Stop after this many optimizer steps (-1: use epochs).")
    lr: float = Field(2e-4, gt=0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(1.0, gt=0)
    batch_size: int = Field(8, ge=1, description="Per-device batch size.")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    max_length: int = Field(1024, ge=16, description="Longer examples are truncated (answer end cut); "
                            "examples whose prompt alone is longer are dropped.")
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on a GPU that supports it or a CPU with bf16 matrix units "
        "(AVX-512 BF16, AMX), else fp32.")
    gradient_checkpointing: bool = False
    # --- losses
    retain_weight: float = Field(1.0, ge=0.0, description="SCoT lambda: loss = CE(refusal) + lambda * CE(retain).")
    decision_weight: float = Field(1.0, ge=0.0, description=(
        "SCoT: weight of the decision tokens (each rule's Yes/No and the conclusion line) relative to the "
        "other answer tokens; 1 = the paper's plain cross-entropy."))
    cpo_weight: float = Field(1.0, ge=0.0, description="R2D: weight of the CPO term added to CE (0 = no CPO).")
    new_token_lr_scale: float = Field(10.0, gt=0.0, description=(
        "R2D: learning-rate multiplier for the added pivot/think token rows (LoRA with trainable tokens). "
        "New rows start far from the learnt vocabulary; at the base lr they are not emitted after a short run."))
    rethink_loss: Literal["ce", "mask"] = Field(
        "ce", description="R2D [RETHINK] labels: ce = cross-entropy only (paper); mask = not trained at all.")
    # --- bookkeeping
    logging_steps: int = Field(5, ge=1)
    save_steps: int = Field(50, ge=1, description="Checkpoint every N steps (for resume).")
    save_total_limit: int = Field(2, ge=1)
    report_to: list[Literal["tensorboard", "wandb"]] = Field(
        default_factory=list, description="HF report_to integrations (need the package installed).")


def _format_error(e: ValidationError, where: str) -> InputError:
    err = e.errors()[0]
    loc = ".".join(map(str, err["loc"])) or "config"
    msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
    return InputError(f"{loc}: {msg}", path=where)


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise InputError("no such config file", path=str(path))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        raise InputError(f"bad YAML: {e}", path=str(path), line=None if line is None else line + 1) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError("expected a mapping of config keys", path=str(path))
    return data


def preset_values(name: str) -> dict[str, Any]:
    """The keys a preset sets (package data ``safethink/train/presets/<name>.yaml``)."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    text = resources.files("safethink.train").joinpath("presets", f"{name}.yaml").read_text(encoding="utf-8")
    import yaml

    return yaml.safe_load(text) or {}


def load_train_config(
    *, preset: str | None = None, config_file: str | Path | None = None, overrides: dict[str, Any] | None = None,
) -> TrainConfig:
    """Merge preset, YAML file and overrides (None values ignored) and validate the result."""
    values: dict[str, Any] = {}
    if preset:
        values.update(preset_values(preset))
        try:
            TrainConfig.model_validate(values)
        except ValidationError as e:
            raise _format_error(e, f"preset {preset}") from None
    if config_file:
        file_values = _read_yaml(Path(config_file))
        try:
            TrainConfig.model_validate({**values, **file_values})
        except ValidationError as e:
            raise _format_error(e, str(config_file)) from None
        values.update(file_values)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as e:
        raise _format_error(e, "command-line options") from None
