"""TRL's SFTConfig plus the safety losses' settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig


@dataclass
class SafetySFTConfig(SFTConfig):
    """:class:`trl.SFTConfig` with the SCoT / R2D loss settings (validated in ``__post_init__``).

    ``remove_unused_columns`` is off and dataset preparation is skipped: safethink tokenises with
    its own chat-template function and hands the trainer ready ``input_ids``/``labels`` rows.
    """

    method: str = field(default="sft", metadata={"help": "scot, r2d or sft."})
    retain_weight: float = field(default=1.0, metadata={"help": "SCoT lambda on retain examples."})
    cpo_weight: float = field(default=1.0, metadata={"help": "R2D: weight of the CPO term."})
    new_token_lr_scale: float = field(default=1.0, metadata={
        "help": "Learning-rate multiplier for the rows of added tokens (PEFT trainable tokens)."})
    pivot_safe_id: int | None = field(default=None, metadata={"help": "Token id of [SAFE] (R2D)."})
    pivot_unsafe_id: int | None = field(default=None, metadata={"help": "Token id of [UNSAFE] (R2D)."})
    fused_lm_head: bool | None = field(default=None, metadata={
        "help": "Use TRL's chunked fused LM head (saves memory on long sequences). None: on with CUDA, off on "
                "CPU, where materialising the logits is about twice as fast."})

    def __post_init__(self) -> None:
        if self.method not in ("scot", "r2d", "sft"):
            raise ValueError(f"method must be scot, r2d or sft, not {self.method!r}")
        if self.retain_weight < 0 or self.cpo_weight < 0:
            raise ValueError("retain_weight and cpo_weight must be >= 0")
        if self.method == "r2d" and self.cpo_weight > 0 and (self.pivot_safe_id is None or self.pivot_unsafe_id is None):
            raise ValueError("R2D with CPO needs pivot_safe_id and pivot_unsafe_id (look them up with pivot_ids)")
        if self.pivot_safe_id is not None and self.pivot_safe_id == self.pivot_unsafe_id:
            raise ValueError("pivot_safe_id and pivot_unsafe_id must differ")
        self.remove_unused_columns = False
        self.dataset_kwargs = {**(self.dataset_kwargs or {}), "skip_prepare_dataset": True}
        super().__post_init__()

    @property
    def uses_cpo(self) -> bool:
        return self.method == "r2d" and self.cpo_weight > 0
