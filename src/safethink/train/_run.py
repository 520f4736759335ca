"""One training run, end to end: data -> tokens -> SafetyTrainer -> run directory.

Run directory layout::

    RUN_DIR/
      adapter_config.json, adapter_model.safetensors   (LoRA; full-FT runs hold the whole model)
      tokenizer files                                  (with the R2D tokens for r2d runs)
      safethink_run.json                               method, base_model, config, data hash, stats
      loss_curve.json                                  the trainer's log history
      README.md                                        run card
      checkpoints/checkpoint-N/                        for resume (removed with keep_checkpoints=False)
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, SafethinkError, SpecError
from ..io import atomic_write_text
from ._config import TrainConfig
from ._data import EncodeStats, check_method, encode_records, load_training_data

log = logging.getLogger(__name__)

RUN_FILE = "safethink_run.json"
STATE_FILE = ".safethink_train.json"  # written at start; a resume must match it
CHECKPOINTS = "checkpoints"
RUN_FORMAT = 1


@dataclass
class TrainResult:
    run_dir: str
    steps: int
    train_loss: float | None
    seconds: float
    train_tokens: int
    tokens_per_second: float
    resumed_from: str | None
    data: EncodeStats


def resolve_base_model(spec: str) -> str:
    """A local directory for a model spec that can be trained (bundled or ``hf:``)."""
    from ..models._spec import parse_model_spec

    ms = parse_model_spec(spec)
    if ms.kind == "bundled":
        from ..models._bundled import bundled_model_dir

        return str(bundled_model_dir())
    if ms.kind == "hf":
        from ..models._hf import resolve_local

        return resolve_local(ms.target)[0]
    raise SpecError(f"cannot train {spec!r}: training needs local weights (smollm2-135m or hf:<id|path>)")


def _precision(cfg: TrainConfig) -> str:
    import torch

    if cfg.precision != "auto":
        return cfg.precision
    if not _cpu_processes():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    from ..models._hf import cpu_has_bf16_matrix_units

    # bf16 matrix units (AVX-512 BF16, AMX) train the bundled model 1.65x faster than fp32, with held-out
    # results within their intervals (BENCHMARKS.md, "Training throughput"); elsewhere bf16 only costs time.
    return "bf16" if cpu_has_bf16_matrix_units() else "fp32"


def _cpu_processes() -> bool:
    """Whether this run's processes compute on the CPU: no CUDA device, or ``accelerate launch --cpu``.

    Accelerate makes a CPU process group (gloo) only when asked for the CPU explicitly; without it a
    launch of several processes on a machine without GPUs silently trains each process alone."""
    import os

    import torch

    forced = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return forced or not torch.cuda.is_available()


def _sharding_requested() -> bool:
    import os

    return any(os.environ.get(k, "").lower() == "true" for k in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"))


def _fsdp_checkpoints() -> bool:
    """Under `accelerate launch` with FSDP's own activation checkpointing (our fsdp.yaml), the
    Trainer's gradient checkpointing must stay off (transformers refuses both)."""
    import os

    return os.environ.get("FSDP_ACTIVATION_CHECKPOINTING", "").lower() == "true"


def _checkpointing_args(on: bool) -> dict[str, Any]:
    """The training-arguments field for activation (gradient) checkpointing under its current name.

    transformers 5 renamed ``gradient_checkpointing`` to ``activation_checkpointing`` and warns on the
    old one (which TRL's SFTConfig still sets to True by default); older 5.x releases only know the old name."""
    import dataclasses

    from trl import SFTConfig

    if "activation_checkpointing" in {f.name for f in dataclasses.fields(SFTConfig)}:
        return {"activation_checkpointing": on, "gradient_checkpointing": None}
    return {"gradient_checkpointing": on}


def _check_report_to(report_to: list[str]) -> None:
    import importlib.util

    for name in report_to:
        if importlib.util.find_spec(name) is None:
            raise SafethinkError(f"report_to {name!r} needs the {name!r} package: pip install {name}")


def _fingerprint(cfg: TrainConfig, model: str, data_hash: str, world_size: int) -> dict[str, Any]:
    """What a resumed run must share with the run that wrote the checkpoint. The batch enters as
    the global batch (per-device batch x accumulation x processes), so a run started on two
    processes resumes on one with twice the accumulation, and the other way round."""
    config = cfg.model_dump(mode="json")
    global_batch = config.pop("batch_size") * config.pop("grad_accum") * world_size
    return {"method": cfg.method, "base_model": model, "config": config, "global_batch": global_batch,
            "data_manifest_hash": data_hash}


def _prepare_out(out: Path, fingerprint: dict[str, Any], *, resume: bool, overwrite: bool) -> str | None:
    """Check the run directory; return the checkpoint to resume from (or None)."""
    from transformers.trainer_utils import get_last_checkpoint

    if out.exists() and overwrite:
        if out.is_dir() and any(out.iterdir()) and not ((out / RUN_FILE).exists() or (out / STATE_FILE).exists()):
            raise InputError("--overwrite only replaces a safethink run directory; this one is not", path=str(out))
        shutil.rmtree(out)
    if (out / RUN_FILE).exists():
        raise InputError("already holds a finished run; pass --overwrite to train again", path=str(out))
    ckpt_dir = out / CHECKPOINTS
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    if (out / STATE_FILE).exists():
        before = json.loads((out / STATE_FILE).read_text(encoding="utf-8"))
        if before != fingerprint:
            changed = sorted(k for k in set(before) | set(fingerprint) if before.get(k) != fingerprint.get(k))
            raise InputError(f"an unfinished run with different settings ({', '.join(changed)}) is here; "
                             "pass --overwrite to start over", path=str(out))
    elif out.exists() and any(out.iterdir()):
        raise InputError("not empty and not a safethink run directory", path=str(out))
    atomic_write_text(out / STATE_FILE, json.dumps(fingerprint, indent=2, sort_keys=True))
    return last if resume else None


def _lora_config(cfg: TrainConfig, model: Any, new_token_ids: list[int]) -> Any:
    from peft import LoraConfig

    kwargs: dict[str, Any] = {}
    if new_token_ids:
        emb_in, emb_out = model.get_input_embeddings(), model.get_output_embeddings()
        names = {id(m): n.split(".")[-1] for n, m in model.named_modules()}
        tied = emb_out is None or emb_out.weight is emb_in.weight
        if cfg.new_tokens == "trainable_tokens":
            # tied: PEFT mirrors the rows into the output layer; untied: train the output rows too
            kwargs["trainable_token_indices"] = (
                list(new_token_ids) if tied else {names[id(emb_in)]: list(new_token_ids),
                                                  names[id(emb_out)]: list(new_token_ids)})
        else:
            kwargs["modules_to_save"] = [names[id(emb_in)]] + ([] if tied else [names[id(emb_out)]])
            kwargs["ensure_weight_tying"] = tied
    return LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_targets, task_type="CAUSAL_LM", **kwargs,
    )


def train(
    cfg: TrainConfig, *, model: str, data: str | Path, out: str | Path, resume: bool = True,
    overwrite: bool = False, callbacks: list[Any] | None = None, keep_checkpoints: bool = False,
) -> TrainResult:
    """Train ``model`` (a spec) on a built training set; write the run directory ``out``.

    An interrupted run started again with the same arguments resumes from its last checkpoint
    and ends with the same weights as an uninterrupted one.
    """
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    from ._collator import SafetyCollator
    from ._tokens import add_r2d_tokens, grow_embeddings, init_new_token_rows, pivot_ids
    from ._trainer import SafetyTrainer
    from ._trainer_config import SafetySFTConfig

    out = Path(out)
    _check_report_to(cfg.report_to)
    td = load_training_data(data)
    check_method(td.records, cfg.method, str(data))
    base_path = resolve_base_model(model)
    from accelerate import PartialState

    on_cpu = _cpu_processes()
    state = PartialState(cpu=on_cpu)
    if on_cpu and state.num_processes > 1 and _sharding_requested():
        log.warning("FSDP / DeepSpeed need GPUs: on the CPU these %d processes train as plain data parallel "
                    "(gloo), every rank holding the whole model", state.num_processes)
    fingerprint = _fingerprint(cfg, model, td.data_hash, state.num_processes)
    with state.main_process_first():  # under `accelerate launch` only rank 0 may clear the directory
        resume_from = _prepare_out(out, fingerprint, resume=resume, overwrite=overwrite and state.is_main_process)

    tok = AutoTokenizer.from_pretrained(base_path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    ids = None
    if cfg.method == "r2d":
        add_r2d_tokens(tok)
        ids = pivot_ids(tok)
    precision = _precision(cfg)
    load_dtype = torch.bfloat16 if precision == "bf16" and not cfg.full_ft else (
        torch.float16 if precision == "fp16" and not cfg.full_ft else torch.float32)
    set_seed(cfg.seed)  # the resized rows and the LoRA init are random
    net = AutoModelForCausalLM.from_pretrained(base_path, dtype=load_dtype)
    n_before = net.get_input_embeddings().weight.shape[0]
    if grow_embeddings(net, tok) and ids is not None:
        init_new_token_rows(net, tok, [i for i in ids.all if i >= n_before])
    net.config.pad_token_id = tok.pad_token_id

    masked = frozenset([ids.rethink]) if ids is not None and cfg.rethink_loss == "mask" else frozenset()
    rows, stats = encode_records(tok, td.records, max_length=cfg.max_length,
                                 retain_weight=cfg.retain_weight if cfg.method == "scot" else 1.0,
                                 decision_weight=cfg.decision_weight if cfg.method == "scot" else 1.0,
                                 masked_ids=masked)
    if not rows:
        raise InputError(f"no example fits in max_length={cfg.max_length}", path=str(data))
    dataset = Dataset.from_list(rows)

    args = SafetySFTConfig(
        output_dir=str(out / CHECKPOINTS), method=cfg.method, retain_weight=cfg.retain_weight,
        cpo_weight=cfg.cpo_weight if cfg.method == "r2d" else 0.0, new_token_lr_scale=cfg.new_token_lr_scale,
        pivot_safe_id=ids.safe if ids else None, pivot_unsafe_id=ids.unsafe if ids else None,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps, learning_rate=cfg.lr,
        lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, max_length=cfg.max_length, seed=cfg.seed,
        data_seed=cfg.seed, bf16=precision == "bf16", fp16=precision == "fp16",
        **_checkpointing_args(cfg.gradient_checkpointing and not _fsdp_checkpoints()), logging_steps=cfg.logging_steps,
        logging_first_step=True, save_strategy="steps", save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit, report_to=list(cfg.report_to) or "none",
        disable_tqdm=bool(callbacks), optim="adamw_torch", use_cpu=on_cpu,
        dataloader_num_workers=0, dataloader_pin_memory=torch.cuda.is_available(),
    )
    trainer = SafetyTrainer(
        model=net, args=args, train_dataset=dataset, processing_class=tok,
        data_collator=SafetyCollator(pad_token_id=tok.pad_token_id, with_weights=cfg.method == "scot"),
        peft_config=None if cfg.full_ft else _lora_config(cfg, net, ids.all if ids else []),
        callbacks=callbacks,
    )
    if callbacks:
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # the caller reports progress itself
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - t0

    if trainer.is_world_process_zero():
        _write_run_dir(trainer, tok, out, cfg, model, base_path, td, stats, seconds, resume_from, precision)
    trainer.accelerator.wait_for_everyone()
    if not keep_checkpoints and trainer.is_world_process_zero():
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    tokens = int(trainer._total_train_tokens)
    return TrainResult(
        run_dir=str(out), steps=int(trainer.state.global_step), train_loss=result.training_loss,
        seconds=seconds, train_tokens=tokens, tokens_per_second=tokens / seconds if seconds else 0.0,
        resumed_from=resume_from, data=stats,
    )


def _write_run_dir(trainer: Any, tok: Any, out: Path, cfg: TrainConfig, model_spec: str, base_path: str,
                   td: Any, stats: EncodeStats, seconds: float, resume_from: str | None, precision: str) -> None:
    from ._card import run_card

    model = trainer.model
    if hasattr(model, "peft_config"):
        # the trained token rows are in the adapter; the full resized matrices need not be
        model.save_pretrained(str(out), save_embedding_layers=cfg.new_tokens == "modules_to_save")
    else:
        trainer.save_model(str(out))
    tok.save_pretrained(str(out))
    history = trainer.state.log_history
    atomic_write_text(out / "loss_curve.json", json.dumps(history, indent=1))
    losses = [h["loss"] for h in history if "loss" in h]
    info = {
        "format": RUN_FORMAT, "method": cfg.method, "base_model": model_spec, "base_model_path": base_path,
        "adapter": not cfg.full_ft, "config": cfg.model_dump(mode="json"), "precision": precision,
        "data_manifest_hash": td.data_hash, "data_manifest": td.manifest, "data_stats": asdict(stats),
        "steps": int(trainer.state.global_step), "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None, "seconds": round(seconds, 2),
        "resumed_from": resume_from, "train_tokens": int(trainer._total_train_tokens),
    }
    atomic_write_text(out / "README.md", run_card(info))
    atomic_write_text(out / RUN_FILE, json.dumps(info, indent=2))  # last: marks the run finished
    (out / STATE_FILE).unlink(missing_ok=True)
