"""``safethink train`` and ``safethink merge``."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ._common import DTYPE_HELP, console, deprecated, either, err_console, quiet_hf, split_list


class MethodChoice(str, Enum):
    scot = "scot"
    r2d = "r2d"
    sft = "sft"


class PresetChoice(str, Enum):
    cpu_small = "cpu-small"
    scot_paper = "scot-paper"
    r2d_paper = "r2d-paper"


TRAIN_PRECISION = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
"""``--dtype`` spellings of other commands -> the training config's ``precision`` names."""


def train_precision(dtype: str | None) -> str | None:
    """``--dtype`` as the training config's ``precision`` (it also takes auto, fp32, bf16, fp16 as they are)."""
    if dtype is None:
        return None
    if dtype not in ("auto", *TRAIN_PRECISION, *TRAIN_PRECISION.values()):
        from ..errors import SpecError

        raise SpecError(f"--dtype {dtype!r}: expected auto, {DTYPE_HELP}")
    return TRAIN_PRECISION.get(dtype, dtype)


def _progress_callback() -> Any:
    """A TrainerCallback that draws a rich progress bar and prints loss lines (main process only)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from transformers import TrainerCallback

    class RichProgress(TrainerCallback):
        def __init__(self) -> None:
            self.prog: Progress | None = None
            self.task = None

        def on_train_begin(self, args, state, control, **kw):
            if not state.is_world_process_zero:
                return
            self.prog = Progress(TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=err_console)
            self.prog.start()
            self.task = self.prog.add_task("train", total=state.max_steps, completed=state.global_step, loss="")

        def on_step_end(self, args, state, control, **kw):
            if self.prog is not None:
                self.prog.update(self.task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kw):
            if self.prog is not None and logs and "loss" in logs:
                extra = "".join(f" {k} {logs[k]:.4f}" for k in ("ce_loss", "cpo_loss") if k in logs)
                self.prog.update(self.task, loss=f"loss {logs['loss']:.4f}{extra}")

        def on_train_end(self, args, state, control, **kw):
            if self.prog is not None:
                self.prog.stop()
                self.prog = None

    return RichProgress()


def train_cmd(
    method: Annotated[MethodChoice, typer.Option(help="scot, r2d (CE + CPO) or sft (plain).")],
    data: Annotated[Path, typer.Option(help="Training set: a `safethink data build` directory or a JSONL file.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory (adapter, tokenizer, safethink_run.json, checkpoints).")],
    model: Annotated[str, typer.Option(help="Base model spec: smollm2-135m or hf:<id|path>.")] = "smollm2-135m",
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config (unknown keys are errors).")] = None,
    preset: Annotated[Optional[PresetChoice], typer.Option(help="Start from a preset (config file and options override it).")] = None,
    epochs: Annotated[Optional[float], typer.Option(min=0.0)] = None,
    lr: Annotated[Optional[float], typer.Option(min=0.0)] = None,
    lora_r: Annotated[Optional[int], typer.Option(min=1)] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Stop after N optimizer steps.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1)] = None,
    grad_accum: Annotated[Optional[int], typer.Option(min=1)] = None,
    max_length: Annotated[Optional[int], typer.Option(min=16)] = None,
    full_ft: Annotated[Optional[bool], typer.Option("--full-ft/--lora", help="Train all weights instead of LoRA.")] = None,
    cpo_weight: Annotated[Optional[float], typer.Option(min=0.0, help="R2D: CPO weight (0 = CE only).")] = None,
    retain_weight: Annotated[Optional[float], typer.Option(min=0.0, help="SCoT lambda on retain examples.")] = None,
    decision_weight: Annotated[Optional[float], typer.Option(
        min=0.0, help="SCoT: loss weight of the verdict tokens (rule Yes/No, conclusion); 1 = plain CE.")] = None,
    seed: Annotated[Optional[int], typer.Option()] = None,
    dtype: Annotated[Optional[str], typer.Option(help=f"Training precision: auto, {DTYPE_HELP}.")] = None,
    report_to: Annotated[Optional[list[str]], typer.Option(help="tensorboard and/or wandb (repeatable).")] = None,
    resume: Annotated[bool, typer.Option(help="Resume from the run directory's last checkpoint if there is one.")] = True,
    overwrite: Annotated[bool, typer.Option(help="Delete an existing run in --out first.")] = False,
    keep_checkpoints: Annotated[bool, typer.Option(help="Keep checkpoints/ after a finished run.")] = False,
    precision: Annotated[Optional[str], deprecated("--precision", "--dtype")] = None,
) -> None:
    """Fine-tune a model with SCoT, R2D (+CPO) or plain SFT; writes an adapter run directory."""
    from ..train import load_train_config, train

    precision = train_precision(either(dtype, precision, "--dtype"))
    overrides = dict(method=method.value, epochs=epochs, lr=lr, lora_r=lora_r, max_steps=max_steps,
                     batch_size=batch_size, grad_accum=grad_accum, max_length=max_length, full_ft=full_ft,
                     cpo_weight=cpo_weight, retain_weight=retain_weight, decision_weight=decision_weight, seed=seed, precision=precision,
                     report_to=split_list(report_to) or None)
    cfg = load_train_config(preset=preset.value if preset else None, config_file=config, overrides=overrides)
    quiet_hf()
    result = train(cfg, model=model, data=data, out=out, resume=resume, overwrite=overwrite,
                   callbacks=[_progress_callback()], keep_checkpoints=keep_checkpoints)
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return
    s = result.data
    table = Table(title=f"{cfg.method} run -> {result.run_dir}")
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("examples", f"{s.examples} ({s.dropped_too_long} dropped too long, {s.truncated} truncated)")
    table.add_row("steps", str(result.steps) + (f" (resumed from {result.resumed_from})" if result.resumed_from else ""))
    table.add_row("mean train loss", f"{result.train_loss:.4f}" if result.train_loss is not None else "-")
    table.add_row("time", f"{result.seconds:.1f} s ({result.tokens_per_second:.0f} tokens/s)")
    console.print(table)


def merge_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A finished `safethink train` run directory.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the merged model (new or empty directory).")],
    dtype: Annotated[str, typer.Option(help=f"{DTYPE_HELP} for the saved weights.")] = "float32",
) -> None:
    """Merge a run's adapter into its base model; the result loads as hf:<out>."""
    from ..train import merge_run

    quiet_hf()
    path = merge_run(run_dir, out, dtype=dtype)
    console.print(f"merged model written to {path} (use --model hf:{path})")


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.command("merge")(merge_cmd)
