"""White-box helpers shared by GCG and AutoDAN: the loss of an affirmative target answer given a
prompt, computed on a transformers model (:class:`~safethink.models._whitebox.WhiteBox`) through the
project's one chat template."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import SpecError
from ..models import ChatModel
from ..models._whitebox import WhiteBox, white_box

DEFAULT_TARGET = "Sure, here is"


_HINT = "pass surrogate=<hf model spec> to optimise on a local model and transfer the prompt"


def resolve_white_box(surrogate: ChatModel | str | None, target: ChatModel | None, *, what: str) -> WhiteBox:
    """The white box to optimise on: the surrogate (a spec is loaded) if given, else the target."""
    if isinstance(surrogate, str):
        from ..models import load_model

        surrogate = load_model(surrogate)
    return white_box(surrogate if surrogate is not None else target, what, hint=_HINT)


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


def prompt_ids(hf: ChatModel | WhiteBox, user_text: str) -> list[int]:
    wb = white_box(hf, "a white-box attack", hint=_HINT)
    text = wb.render([{"role": "user", "content": user_text}])
    return wb.tokenizer(text, add_special_tokens=False).input_ids


def target_token_ids(hf: ChatModel | WhiteBox, target: str) -> list[int]:
    ids = white_box(hf, "a white-box attack", hint=_HINT).tokenizer(target, add_special_tokens=False).input_ids
    if not ids:
        raise SpecError("the optimisation target is empty after tokenisation")
    return ids


def target_losses(hf: ChatModel | WhiteBox, user_texts: Sequence[str], target: str, *,
                  batch_size: int = 8) -> list[float]:
    """Mean cross-entropy of ``target`` as the assistant's answer to each user text (lower = the
    model is closer to starting its answer with the target)."""
    import torch

    wb = white_box(hf, "a white-box attack", hint=_HINT)
    tgt = target_token_ids(wb, target)
    seqs = [prompt_ids(wb, u) for u in user_texts]
    dev = wb.device
    pad = wb.tokenizer.pad_token_id or 0
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
            logits = wb.net(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                            logits_to_keep=len(tgt) + 1).logits[:, :-1].float()
            labels = torch.tensor(tgt, device=dev).expand(len(chunk), -1)
            ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="none").mean(1)
            out.extend(float(x) for x in ce)
    return out
