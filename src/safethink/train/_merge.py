"""``safethink merge``: fold a run's LoRA adapter (and trained token rows) into the base weights."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import InputError


def read_run_info(run_dir: str | Path) -> dict:
    from ._run import RUN_FILE

    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise InputError(f"no {RUN_FILE} (not a finished safethink training run)", path=str(run_dir))
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"bad JSON ({e.msg})", path=str(path), line=e.lineno) from None


def merge_run(run_dir: str | Path, out: str | Path, *, dtype: str = "float32") -> Path:
    """Write base model + adapter merged into one plain transformers model directory ``out``
    (loadable with ``hf:<out>``). Written to a temporary sibling and renamed, never half-written."""
    import torch
    from transformers import AutoModelForCausalLM

    from ..models._hf import attach_adapter, load_tokenizer, pick_device_dtype
    from ._run import resolve_base_model

    run_dir, out = Path(run_dir), Path(out)
    info = read_run_info(run_dir)
    if not info.get("adapter", True):
        raise InputError("this run trained all weights; it is already a full model (use hf:RUN_DIR)",
                         path=str(run_dir))
    if out.exists() and any(out.iterdir()):
        raise InputError("output directory exists and is not empty", path=str(out))
    base = resolve_base_model(info["base_model"])
    _, torch_dtype = pick_device_dtype("cpu", dtype)
    tok = load_tokenizer(base, str(run_dir))
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch_dtype)
    model = attach_adapter(model, tok, str(run_dir)).merge_and_unload()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with torch.no_grad():
            model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        (tmp / "safethink_merged.json").write_text(
            json.dumps({"run_dir": str(run_dir.resolve()), "run": info}, indent=2), encoding="utf-8")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
