"""White-box access to a local transformers chat model: its network, tokenizer and device, the chat
template, switching a LoRA adapter off, and batched logits, token log-probabilities and hidden states.

Everything in safethink that reads a model's weights (probes, the perplexity filter, the SCoT verdict
guard, GCG and AutoDAN) goes through :func:`white_box`, so a model without local weights fails with
one error that says what is needed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import SpecError
from ._types import Conversation


@dataclass
class Batch:
    """Texts tokenised together, right-padded, on the model's device."""

    inputs: Any
    """``input_ids`` and ``attention_mask`` (a transformers ``BatchEncoding``)."""
    offsets: list[list[tuple[int, int]]] | None = None
    """Per text, each token's (start, end) character span (only when asked for)."""

    @property
    def mask(self) -> Any:
        return self.inputs["attention_mask"]

    @property
    def lengths(self) -> Any:
        """Real (unpadded) tokens per row."""
        return self.mask.sum(dim=1)


class WhiteBox:
    """The inside of a local transformers chat model (``smollm2-135m``, ``hf:...``)."""

    def __init__(self, chat: Any):
        self.chat = chat

    @property
    def net(self) -> Any:
        """The transformers network (a PEFT wrapper when the model carries an adapter)."""
        return self.chat.model

    model = net  # the attribute name HFChatModel uses, so helpers accept either

    @property
    def tokenizer(self) -> Any:
        return self.chat.tokenizer

    @property
    def device(self) -> Any:
        return next(self.net.parameters()).device

    @property
    def spec(self) -> str:
        return str(getattr(self.chat, "spec", type(self.chat).__name__))

    @property
    def adapter(self) -> str | None:
        return getattr(self.chat, "adapter", None) or None

    def render(self, conversation: Conversation, prefix: str = "") -> str:
        """The conversation in the model's chat template, opening the assistant turn (then ``prefix``)."""
        return self.chat.render(conversation, prefix)

    def adapter_off(self, why: str) -> contextlib.AbstractContextManager[None]:
        """A context under which the network runs as its base model (a no-op without an adapter). A merged
        adapter is unmerged by switching it off and folded back in after, so generation stays fast.
        ``why`` completes the error raised at once when the adapter cannot be switched off."""
        if not self.adapter:
            return contextlib.nullcontext()
        if not hasattr(self.net, "disable_adapter"):
            raise SpecError(f"cannot switch off the adapter of {self.spec} to {why}")
        return self._off()

    @contextlib.contextmanager
    def _off(self) -> Iterator[None]:
        net = self.net
        merged = any(getattr(m, "merged", False) for m in net.modules())
        with net.disable_adapter():
            yield
        if merged:
            net.merge_adapter()

    def encode(self, texts: Sequence[str], *, add_special_tokens: bool = False, offsets: bool = False) -> Batch:
        """Tokenise ``texts`` as one right-padded batch on the model's device."""
        tok = self.tokenizer
        side = tok.padding_side
        try:
            tok.padding_side = "right"
            enc = tok(list(texts), return_tensors="pt", padding=True, add_special_tokens=add_special_tokens,
                      return_offsets_mapping=offsets)
        finally:
            tok.padding_side = side
        spans = enc.pop("offset_mapping").tolist() if offsets else None
        return Batch(enc.to(self.device), spans)

    def logits(self, batch: Batch) -> Any:
        """Next-token logits at every position, shape ``(batch, tokens, vocab)``, without gradients."""
        import torch

        with torch.inference_mode():
            return self.net(**batch.inputs).logits

    def token_logprobs(self, texts: Sequence[str], *, add_special_tokens: bool = False,
                       batch_size: int = 16) -> list[Any]:
        """Per text, the float32 log-probability of each of its tokens after the first given the tokens
        before it (a 1-D tensor, one shorter than the text's tokens)."""
        import torch

        out: list[Any] = []
        for start in range(0, len(texts), batch_size):
            batch = self.encode(texts[start:start + batch_size], add_special_tokens=add_special_tokens)
            lp = torch.log_softmax(self.logits(batch)[:, :-1].float(), dim=-1)
            got = lp.gather(-1, batch.inputs["input_ids"][:, 1:, None])[..., 0]
            for row, n in zip(got, batch.lengths.tolist()):
                out.append(row[:max(n - 1, 0)])
        return out

    def hidden_states(self, batch: Batch) -> tuple[Any, ...]:
        """Every layer's hidden states of a batch (layer 0 = the embeddings), without gradients. The
        language-model head runs on the last position only (``logits_to_keep=1``) where the model takes
        it: full-sequence logits over a large vocabulary cost more memory than all the states together."""
        import torch

        with torch.inference_mode():
            try:
                return self.net(**batch.inputs, output_hidden_states=True, logits_to_keep=1).hidden_states
            except TypeError as e:
                if "logits_to_keep" not in str(e):
                    raise
                return self.net(**batch.inputs, output_hidden_states=True).hidden_states


def white_box(model: Any, what: str, *, hint: str = "") -> WhiteBox:
    """The :class:`WhiteBox` of ``model`` (itself if it already is one). ``what`` names the caller in the
    error raised for a model without local transformers weights; ``hint`` is appended to it."""
    if isinstance(model, WhiteBox):
        return model
    if model is None or getattr(model, "model", None) is None or getattr(model, "tokenizer", None) is None:
        spec = "no model" if model is None else getattr(model, "spec", type(model).__name__)
        raise SpecError(f"{what} needs a local transformers model (smollm2-135m, hf:...), not {spec}"
                        + (f"; {hint}" if hint else ""))
    return WhiteBox(model)
