"""TRL's SFTTrainer with the SCoT and R2D losses; only ``compute_loss`` changes.

On CUDA the forward pass is TRL's fused LM head (per-token log-probabilities without
materialising the ``[B, T, V]`` logits); on CPU, where that chunked kernel is about twice as slow,
the logits are materialised (``fused_lm_head`` overrides the choice). CPO needs logits at the few ``[SAFE]``/``[UNSAFE]`` label positions only,
so a forward hook on the backbone projects the hidden states at those positions onto the two
output rows: the extra cost is ``N_pivots x 2 x H``, not a second forward or full logits.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.distributed.tensor import DTensor
from trl import SFTTrainer
from trl.trainer.utils import maybe_gather_lm_head_ctx

from ._losses import cpo_from_pivot_logits, next_token_log_probs, pivot_positions, weighted_token_nll
from ._trainer_config import SafetySFTConfig


def _pretrained(model: Any) -> Any:
    """The transformers model under PEFT / accelerate wrappers."""
    m = getattr(model, "module", model)
    return m.get_base_model() if hasattr(m, "get_base_model") else m


def _expose_head_bias(model: Any) -> None:
    """TRL's fused LM head reads ``lm_head.bias``; PEFT's trainable-token wrapper (R2D's new rows)
    only forwards ``weight``. Give the wrapper the base layer's ``None`` bias so both work."""
    head = model.get_output_embeddings()
    base = getattr(getattr(head, "token_adapter", None), "base_layer", None)
    if base is None or hasattr(head, "bias"):
        return
    if base.bias is not None:
        raise ValueError("trainable_tokens on an output layer with a bias is not supported; "
                         "use new_tokens: modules_to_save")
    object.__setattr__(head, "bias", None)


class SafetyTrainer(SFTTrainer):
    """``SFTTrainer`` whose loss is ``weighted CE (+ cpo_weight * CPO for R2D)``.

    * scot: per-example weights (1 for refusal, ``retain_weight`` for retain rows) on the token CE.
    * r2d:  token CE + ``cpo_weight`` * CPO at ``[SAFE]``/``[UNSAFE]`` label positions.
    * sft:  token CE (the same value as plain TRL SFT on the same labels).
    """

    args: SafetySFTConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, SafetySFTConfig):
            raise TypeError("SafetyTrainer needs a SafetySFTConfig")
        _expose_head_bias(_pretrained(self.model))
        self._cpo_labels: torch.Tensor | None = None
        self._pivot_out: tuple[torch.Tensor, torch.Tensor] | None = None
        self._hook = None
        if self.args.uses_cpo:
            backbone = _pretrained(self.model).base_model
            self._hook = backbone.register_forward_hook(self._pivot_logits_hook)

    def create_optimizer(self, model: Any = None) -> Any:
        """The Trainer's optimizer, with the added-token rows (PEFT ``trainable_tokens_delta``) in a
        group of their own at ``lr * new_token_lr_scale``; the scheduler scales every group alike."""
        opt = super().create_optimizer(model)
        scale = self.args.new_token_lr_scale
        if scale == 1.0:
            return opt
        rows = {id(p) for n, p in (model or self.model).named_parameters()
                if p.requires_grad and "trainable_tokens_delta" in n}
        if not rows:
            return opt
        moved: list[Any] = []
        for group in opt.param_groups:
            keep = [p for p in group["params"] if id(p) not in rows]
            moved += [p for p in group["params"] if id(p) in rows]
            group["params"] = keep
        opt.param_groups = [g for g in opt.param_groups if g["params"]]
        opt.add_param_group({"params": moved, "lr": self.args.learning_rate * scale, "weight_decay": 0.0})
        return opt

    def _pivot_logits_hook(self, module: Any, inputs: Any, output: Any) -> None:
        """Runs inside the model's forward (as TRL's fused head does, so ZeRO-3 / FSDP gathering
        behaves the same): project the hidden states at pivot label positions onto the
        ``[SAFE]``/``[UNSAFE]`` output rows only."""
        labels = self._cpo_labels
        if labels is None:
            return
        hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        s_id, u_id = self.args.pivot_safe_id, self.args.pivot_unsafe_id
        pos = pivot_positions(labels, s_id, u_id)
        head = _pretrained(self.model).get_output_embeddings()
        weight, bias = head.weight, getattr(head, "bias", None)
        if isinstance(weight, DTensor):  # FSDP2 shards
            weight = weight.full_tensor()
            bias = bias.full_tensor() if isinstance(bias, DTensor) else bias
        params = [p for p in (weight, bias) if isinstance(p, torch.nn.Parameter)]
        with maybe_gather_lm_head_ctx(*params):
            rows = weight[[s_id, u_id]]
            h = hidden[:, :-1][pos].to(device=rows.device, dtype=rows.dtype)
            z = F.linear(h, rows, None if bias is None else bias[[s_id, u_id]])
        self._pivot_out = (z.float(), labels[:, 1:][pos] == s_id)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        weights = inputs.pop("loss_weights", None)
        if self.args.method != "scot":
            weights = None
        inputs["use_cache"] = False
        self._cpo_labels = inputs["labels"] if self.args.uses_cpo else None
        fused = self.args.fused_lm_head
        if fused is None:
            fused = torch.cuda.is_available()
        try:
            if fused:
                outputs = model(**inputs, fused_lm_head=True)
                log_probs, label_mask, is_top1 = outputs.log_probs, outputs.label_mask, outputs.is_top1
            else:
                labels = inputs.pop("labels")
                outputs = model(**inputs)
                log_probs, label_mask, is_top1 = next_token_log_probs(outputs.logits, labels)
        finally:
            self._cpo_labels = None
        pivot_out, self._pivot_out = self._pivot_out, None

        loss = weighted_token_nll(log_probs, label_mask, weights, num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # num_items_in_batch counts every rank's tokens and DDP averages gradients (as in TRL)
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        metrics = self._metrics[mode]
        n_valid = label_mask.sum().clamp(min=1)
        metrics["ce_loss"].append((-(log_probs.detach() * label_mask).sum() / n_valid).item())
        metrics["mean_token_accuracy"].append(((is_top1 & label_mask).sum() / n_valid).item())

        if self.args.uses_cpo:
            if pivot_out is None:
                raise RuntimeError("CPO needs the backbone's hidden states, but the forward hook saw none")
            cpo, n_pivots = cpo_from_pivot_logits(*pivot_out), len(pivot_out[1])
            # CPO is a per-micro-batch mean; under gradient accumulation with token-normalised CE the
            # Trainer does not divide by the number of steps, so do it here (as TRL does for aux losses)
            steps = self.current_gradient_accumulation_steps if num_items_in_batch is not None else 1
            loss = loss + self.args.cpo_weight * cpo / steps
            metrics["cpo_loss"].append(cpo.detach().item())
            metrics["pivots"].append(float(n_pivots))

        if mode == "train":
            n_tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            self._total_train_tokens += n_tokens
        metrics["num_tokens"] = [self._total_train_tokens]
        return (loss, outputs) if return_outputs else loss
