"""Batching of pre-tokenised examples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._losses import IGNORE_INDEX


@dataclass
class SafetyCollator:
    """Right-pads ``{"input_ids", "labels"[, "loss_weight"]}`` rows into tensors.

    Padding is decided by each row's length, never by token id: SmolLM2's pad token *is* its
    end-of-turn token ``<|im_end|>``, and that token must stay in the loss where it closes the
    assistant turn. Example with ``pad_token_id=2`` and two rows::

        rows   = [{"input_ids": [5, 6, 7, 2], "labels": [-100, -100, 7, 2], "loss_weight": 1.0},
                  {"input_ids": [5, 8],       "labels": [-100, 8],          "loss_weight": 0.5}]
        batch  = {"input_ids":      [[5, 6, 7, 2], [5, 8, 2, 2]],
                  "attention_mask": [[1, 1, 1, 1], [1, 1, 0, 0]],
                  "labels":         [[-100, -100, 7, 2], [-100, 8, -100, -100]],
                  "loss_weights":   [1.0, 0.5]}          # only when with_weights=True

    ``input_ids``/``attention_mask``/``labels`` are ``int64 [B, L]`` with ``L`` the longest row
    (rounded up to ``pad_to_multiple_of``); ``loss_weights`` is ``float32 [B]``, or ``[B, L]`` (the
    example weight times each token's weight, 1 on padding) when rows carry ``token_weights``.
    """

    pad_token_id: int
    with_weights: bool = False
    pad_to_multiple_of: int | None = None

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            width = (width + m - 1) // m * m
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            if len(r["labels"]) != n:
                raise ValueError(f"row {i}: {n} input_ids but {len(r['labels'])} labels")
            ids[i, :n] = torch.as_tensor(r["input_ids"], dtype=torch.long)
            labels[i, :n] = torch.as_tensor(r["labels"], dtype=torch.long)
            mask[i, :n] = 1
        batch: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        if self.with_weights:
            w = torch.tensor([float(r.get("loss_weight", 1.0)) for r in rows], dtype=torch.float32)
            if any("token_weights" in r for r in rows):
                tw = torch.ones((len(rows), width), dtype=torch.float32)
                for i, r in enumerate(rows):
                    if "token_weights" in r:
                        tw[i, :len(r["token_weights"])] = torch.as_tensor(r["token_weights"], dtype=torch.float32)
                w = w.unsqueeze(1) * tw
            batch["loss_weights"] = w
        return batch
