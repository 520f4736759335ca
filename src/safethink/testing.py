"""Helpers for fast offline tests: a tiny random-initialised Llama that uses the real SmolLM2
tokenizer and chat template, so training and guard tests run in milliseconds on a CPU."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ._home import safethink_home

TINY_NAME = "tiny-llama-smollm2-tok"


def tiny_model_config(tokenizer: Any, **overrides: Any) -> Any:
    from transformers import LlamaConfig

    cfg = dict(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    cfg.update(overrides)
    return LlamaConfig(**cfg)


def tiny_model_dir(seed: int = 0) -> Path:
    """Directory with a tiny random Llama + the bundled model's tokenizer (built once, atomically)."""
    target = safethink_home() / "models" / f"{TINY_NAME}-{seed}"
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .models._bundled import bundled_model_dir

    tok = AutoTokenizer.from_pretrained(str(bundled_model_dir()))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_model_config(tok), dtype=torch.float32)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{TINY_NAME}-", dir=target.parent))
    try:
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        if not target.exists():
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def tiny_chat_model(seed: int = 0, adapter: str | None = None) -> Any:
    """An :class:`~safethink.models.ChatModel` over the tiny model (spec ``hf:<dir>``)."""
    from .models._hf import HFChatModel

    d = tiny_model_dir(seed)
    return HFChatModel.from_path(str(d), spec=f"hf:{d}", adapter=adapter, device="cpu", dtype="float32")
