"""Shared fixtures: offline environment, the public data copies, the tiny model."""

from __future__ import annotations

import os
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
