"""Shared fixtures: offline environment, the public data copies, the tiny model."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SAFETHINK_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The public dataset copies (never committed to the project)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"public dataset copies not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def bundled_dir() -> Path:
    from safethink.models._bundled import bundled_model_dir

    return bundled_model_dir()


@pytest.fixture(scope="session")
def tiny_dir(bundled_dir) -> Path:
    from safethink.testing import tiny_model_dir

    return tiny_model_dir()


@pytest.fixture(scope="session")
def tiny_model(tiny_dir):
    from safethink.testing import tiny_chat_model

    return tiny_chat_model()


@pytest.fixture(scope="session")
def tokenizer(tiny_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_dir))


@pytest.fixture
def cli(capsys, monkeypatch):
    """The console entry point in-process, in a wide terminal: returns (exit code, stdout, stderr)."""
    from safethink.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["safethink", *args])
        monkeypatch.setenv("COLUMNS", "250")
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def adapted_model(tiny_dir, tmp_path):
    """The tiny model with a random LoRA adapter (q and v projections) that changes its states and answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from safethink.models import load_model

    torch.manual_seed(0)
    net = get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny_dir)),
                         LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # B starts at zero: make the adapter change the model
    net.save_pretrained(str(tmp_path / "adapter"))
    return load_model(f"hf:{tiny_dir}", adapter=str(tmp_path / "adapter"), device="cpu", dtype="float32")
