"""The one interface every model backend implements: batched chat generation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

Message = dict[str, str]
"""A chat message: ``{"role": "system"|"user"|"assistant", "content": str}``."""

Conversation = list[Message]


@dataclass(frozen=True)
class GenerationConfig:
    """How to decode. ``temperature == 0`` means greedy."""

    max_new_tokens: int = 256
    """Upper bound on generated tokens per conversation."""
    temperature: float = 0.0
    """Sampling temperature; 0 selects greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling mass (ignored when greedy)."""
    stop: tuple[str, ...] = ()
    """Stop strings; generation ends when one appears (it is cut from the text)."""
    seed: int | None = None
    """Seed for sampling, so a sampled run can be reproduced."""
    logprobs: bool = False
    """Return the log-probability of every generated token where the backend can."""
    batch_size: int = 16
    """Conversations decoded together (local backends) or in flight at once (HTTP)."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


FinishReason = Literal["stop", "length", "hook"]


@dataclass
class Completion:
    """One generated answer."""

    text: str
    """The generated text (special tokens kept only if the backend was asked to keep them)."""
    finish_reason: FinishReason
    """``stop`` (end of turn or stop string), ``length`` (max_new_tokens) or ``hook`` (a token hook halted it)."""
    token_ids: list[int] | None = None
    """Generated token ids, where the backend exposes them."""
    logprobs: list[float] | None = None
    """Per-token log-probabilities, when requested and available."""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    raw_text: str | None = None
    """Text with special tokens kept (local backends), for guards that read pivots."""


@dataclass(frozen=True)
class TokenEvent:
    """One newly decoded token of one conversation in the batch."""

    row: int
    """Index of the conversation in the batch passed to ``generate``."""
    token_id: int | None
    """The token id (None for backends that only stream text)."""
    piece: str
    """The decoded text of this token, special tokens included."""
    generated: Sequence[int] = field(default=())
    """All token ids generated so far for this row (empty for text-only backends)."""


class TokenHook(Protocol):
    """Called after every generated token; return True to halt that conversation now.

    Guards use this to act on safety pivot tokens while decoding (the halted row's
    ``Completion.finish_reason`` is ``"hook"``).
    """

    def __call__(self, event: TokenEvent) -> bool: ...


ProgressFn = Callable[[int], None]
"""Called with the number of conversations just finished."""


@runtime_checkable
class ChatModel(Protocol):
    """A model that answers batches of chat conversations."""

    spec: str
    """The spec string this model was built from (recorded in results)."""

    def generate(
        self,
        conversations: Sequence[Conversation],
        config: GenerationConfig = GenerationConfig(),
        *,
        prefixes: Sequence[str] | None = None,
        hook: TokenHook | None = None,
        progress: ProgressFn | None = None,
    ) -> list[Completion]:
        """Answer every conversation, in order.

        ``prefixes[i]``, when given, is text the assistant turn already starts with
        (prefilling); the completion continues it and does not repeat it.
        """
        ...

    def close(self) -> None:
        """Release resources (servers, GPU memory)."""
        ...


def check_prefixes(conversations: Sequence[object], prefixes: Sequence[str] | None) -> None:
    """Every backend's ``generate`` takes one prefix per conversation, or none at all."""
    if prefixes is not None and len(prefixes) != len(conversations):
        raise ValueError("prefixes must have one entry per conversation")
