"""llama.cpp backend for GGUF files (extra ``llamacpp`` = ``llama-cpp-python``).

We do not use llama.cpp's ``create_chat_completion``: it applies the chat template embedded in the
GGUF with its own Jinja code and cannot prefill the assistant turn. Instead the prompt is rendered
by :func:`render_chat` (the one template function, same text as training and the other
backends) with a Hugging Face tokenizer read from the same GGUF file, tokenised by llama.cpp
(special tokens parsed, no extra BOS) and completed with ``create_completion``. With a token hook
the completion is streamed and the hook sees each text piece (``token_id`` is None); a hook that
returns True closes the stream, which stops decoding.

Conversations are decoded one at a time (llama-cpp-python's high-level API has no batching).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from ..errors import BackendError, MissingExtraError, SpecError
from ._chat import render_chat
from ._base import Backend, Report, Row
from ._types import Completion, GenerationConfig, TokenEvent, TokenHook


def _import_llama() -> Any:
    try:
        import llama_cpp
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] != "llama_cpp":
            raise
        raise MissingExtraError("llama-cpp-python", "llamacpp", "the llama.cpp backend (llamacpp:<file.gguf>)") from None
    return llama_cpp


class LlamaCppChatModel(Backend):
    """A ``llama_cpp.Llama`` model behind :class:`ChatModel`."""

    hook_mode: Literal["live", "post-hoc"] = "live"

    def __init__(self, llm: Any, tokenizer: Any, *, spec: str, logits_all: bool = False):
        self.llm = llm
        self.tokenizer = tokenizer
        self.spec = spec
        self.logits_all = logits_all

    @classmethod
    def from_file(
        cls, path: str, *, spec: str, tokenizer: str | None = None, n_ctx: int = 4096,
        n_gpu_layers: int = 0, n_threads: int | None = None, seed: int = 0,
        logits_all: bool = False, **llama_kwargs: Any,
    ) -> LlamaCppChatModel:
        """Load a GGUF file.

        Args:
            path: the ``.gguf`` file.
            spec: the spec string recorded in results.
            tokenizer: a Hugging Face tokenizer directory or cached hub id whose chat template to
                use; default: the tokenizer and template stored in the GGUF file itself.
            n_ctx: context window in tokens (prompt + answer).
            n_gpu_layers: layers to offload to a GPU build of llama.cpp (-1 = all).
            n_threads: CPU threads (default: llama.cpp's choice).
            seed: llama.cpp's default sampling seed (a config seed overrides it per row).
            logits_all: keep logits for every position; required for ``logprobs=True``.
            llama_kwargs: passed to ``llama_cpp.Llama`` unchanged.
        """
        p = Path(path).expanduser()
        if not p.is_file():
            raise SpecError(f"{path}: no such GGUF file")
        llama_cpp = _import_llama()
        from transformers import AutoTokenizer

        if tokenizer:
            from ._hf import resolve_local

            tok = AutoTokenizer.from_pretrained(resolve_local(tokenizer)[0])
        else:
            tok = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
        llm = llama_cpp.Llama(model_path=str(p), n_ctx=n_ctx, n_gpu_layers=n_gpu_layers,
                              n_threads=n_threads, seed=seed, logits_all=logits_all,
                              verbose=False, **llama_kwargs)
        return cls(llm, tok, spec=spec, logits_all=logits_all)

    def _complete(self, batch: list[Row], config: GenerationConfig, hook: TokenHook | None,
                  report: Report) -> list[Completion]:
        if config.logprobs and not self.logits_all:
            raise SpecError("logprobs with llama.cpp need the model loaded with logits_all=True")
        out = []
        for r in batch:
            text = render_chat(self.tokenizer, r.conversation, add_generation_prompt=True, assistant_prefix=r.prefix)
            out.append(self._one(r.index, text, config, hook))
            report(1)
        return out

    def _one(self, row: int, text: str, config: GenerationConfig, hook: TokenHook | None) -> Completion:
        ids = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        n_ctx = self._context_window()
        if len(ids) >= n_ctx:
            raise BackendError(f"{self.spec}: the prompt of conversation {row} has {len(ids)} tokens, which does "
                               f"not fit the context window of {n_ctx} (load with a larger n_ctx=)")
        kwargs: dict[str, Any] = dict(
            prompt=ids, max_tokens=min(config.max_new_tokens, n_ctx - len(ids)), temperature=config.temperature,
            # Plain temperature / nucleus sampling, as the other backends do: switch off
            # llama.cpp's extra samplers (top-k 40, min-p 0.05 by default) and penalties.
            top_p=1.0 if config.greedy else config.top_p, top_k=0, min_p=0.0, typical_p=1.0,
            repeat_penalty=1.0, stop=list(config.stop),
            seed=None if config.seed is None else config.seed + row,
            logprobs=1 if config.logprobs else None,
        )
        if hook is None:
            res = self.llm.create_completion(**kwargs)
            choice = res["choices"][0]
            usage = res.get("usage") or {}
            return Completion(
                text=choice["text"], finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
                logprobs=_logprobs(choice.get("logprobs")), prompt_tokens=usage.get("prompt_tokens", len(ids)),
                completion_tokens=usage.get("completion_tokens"), raw_text=choice["text"],
            )
        parts: list[str] = []
        logps: list[float] = []
        reason: str | None = None
        stream = self.llm.create_completion(stream=True, **kwargs)
        try:
            for chunk in stream:
                choice = chunk["choices"][0]
                reason = choice.get("finish_reason") or reason
                logps.extend(_logprobs(choice.get("logprobs")) or [])
                piece = choice.get("text") or ""
                if not piece:
                    continue
                parts.append(piece)
                if hook(TokenEvent(row=row, token_id=None, piece=piece)):
                    reason = "hook"
                    break
        finally:
            stream.close()  # stops decoding when the hook halted the row
        finish = "hook" if reason == "hook" else ("length" if reason == "length" else "stop")
        text = "".join(parts)
        return Completion(text=text, finish_reason=finish, logprobs=logps if config.logprobs else None,
                          prompt_tokens=len(ids), completion_tokens=len(logps) or None, raw_text=text)

    def _context_window(self) -> int:
        # llama.cpp pads a small context (n_ctx() can exceed the n_ctx asked for) while
        # llama-cpp-python sizes its token buffer (input_ids) by the n_ctx asked for and overflows it
        # past that: the smaller of the two binds.
        buffer = getattr(self.llm, "input_ids", None)
        return min(self.llm.n_ctx(), len(buffer)) if buffer is not None else self.llm.n_ctx()

    def close(self) -> None:
        llm, self.llm = self.llm, None
        if llm is not None and hasattr(llm, "close"):
            llm.close()


def _logprobs(block: Any) -> list[float] | None:
    """Completions-style logprobs: ``{"token_logprobs": [...], ...}``."""
    if not isinstance(block, dict) or block.get("token_logprobs") is None:
        return None
    return [float(x) for x in block["token_logprobs"] if x is not None]
