"""White-box helpers shared by GCG and AutoDAN: the loss of an affirmative target answer given a
prompt, computed on a transformers model through the project's one chat template."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import SpecError
from ..models import ChatModel

DEFAULT_TARGET = "Sure, here is"


def white_box(model: Any, *, what: str) -> Any:
    """The model if it exposes ``.model`` and ``.tokenizer`` (an HFChatModel); else a clear error."""
    if model is None or getattr(model, "model", None) is None or getattr(model, "tokenizer", None) is None:
        spec = getattr(model, "spec", type(model).__name__)
        raise SpecError(
            f"{what} needs gradients or losses from a transformers model (hf:<id|path> or smollm2-135m); "
            f"{spec!r} is not one. Pass surrogate=<hf model spec> to optimise on a local model and "
            f"transfer the prompt.")
    return model


def resolve_white_box(surrogate: ChatModel | str | None, target: ChatModel | None, *, what: str) -> Any:
    if isinstance(surrogate, str):
        from ..models import load_model

        surrogate = load_model(surrogate)
    return white_box(surrogate if surrogate is not None else target, what=what)


def record_target(target: str | None, default: str) -> str:
    return (target or default).strip() or DEFAULT_TARGET


@contextlib.contextmanager
def frozen(model: Any) -> Iterator[None]:
    """Turn off parameter gradients for the duration (only the input needs them); restore after."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def prompt_ids(hf: Any, user_text: str) -> list[int]:
    text = hf.render([{"role": "user", "content": user_text}])
    return hf.tokenizer(text, add_special_tokens=False).input_ids


def target_token_ids(hf: Any, target: str) -> list[int]:
    ids = hf.tokenizer(target, add_special_tokens=False).input_ids
    if not ids:
        raise SpecError("the optimisation target is empty after tokenisation")
    return ids


def target_losses(hf: Any, user_texts: Sequence[str], target: str, *, batch_size: int = 8) -> list[float]:
    """Mean cross-entropy of ``target`` as the assistant's answer to each user text (lower = the
    model is closer to starting its answer with the target)."""
    import torch

    tgt = target_token_ids(hf, target)
    seqs = [prompt_ids(hf, u) for u in user_texts]
    dev = hf.device
    pad = hf.tokenizer.pad_token_id or 0
    out: list[float] = []
    with torch.no_grad():
        for s in range(0, len(seqs), batch_size):
            chunk = [p + tgt for p in seqs[s:s + batch_size]]
            width = max(len(c) for c in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, c in enumerate(chunk):  # left padding: every row's target is its last tokens
                ids[i, width - len(c):] = torch.tensor(c)
                mask[i, width - len(c):] = 1
            pos = (mask.cumsum(1) - 1).clamp(min=0)
            # Only the positions that predict the target need logits: the full-vocabulary logits
            # of every prompt position would dominate time and memory.
            logits = hf.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                              logits_to_keep=len(tgt) + 1).logits[:, :-1].float()
            labels = torch.tensor(tgt, device=dev).expand(len(chunk), -1)
            ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="none").mean(1)
            out.extend(float(x) for x in ce)
    return out
