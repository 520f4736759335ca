"""transformers backend: batched generation with left padding, KV cache and token hooks."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ..errors import SafethinkError, SpecError
from ._chat import render_chat
from ._base import Backend, Report, Row, length_batches
from ._types import Completion, Conversation, GenerationConfig, TokenEvent, TokenHook

log = logging.getLogger(__name__)


def resolve_local(target: str) -> tuple[str, dict[str, Any]]:
    """Turn a hub id or path into something ``from_pretrained`` can load without network.

    A local directory is used as is. A hub id must already be in the local Hugging Face cache;
    set ``SAFETHINK_ALLOW_DOWNLOAD=1`` to let transformers download it instead.
    """
    p = Path(target).expanduser()
    if p.exists():
        if not p.is_dir():
            raise SpecError(f"{target}: expected a model directory (config.json + weights)")
        if not (p / "config.json").is_file():
            raise SpecError(f"{target}: no config.json in this directory; not a transformers model")
        return str(p), {}
    if target.startswith((".", "/", "~")):
        raise SpecError(f"{target}: no such model directory")
    if os.environ.get("SAFETHINK_ALLOW_DOWNLOAD") == "1":
        return target, {}
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(target, local_files_only=True)
    except Exception as e:  # LocalEntryNotFoundError and friends
        raise SpecError(
            f"model {target!r} is not in the local Hugging Face cache and safethink does not download "
            f"at run time. Fix: run `hf download {target}` where there is network (or copy the model "
            f"folder here and pass hf:/path/to/it), or set SAFETHINK_ALLOW_DOWNLOAD=1"
        ) from e
    return local, {}


def pick_device_dtype(device: str | None, dtype: str | None) -> tuple[str, Any]:
    import torch

    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype in (None, "auto"):
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return device, torch.bfloat16
        if device == "cpu" and cpu_has_bf16_matrix_units():
            return device, torch.bfloat16
        return device, torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise SpecError(f"dtype {dtype!r}: expected one of {', '.join(table)}")
    return device, table[dtype]


def cpu_has_bf16_matrix_units() -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX-512 BF16 or AMX tiles): there ``auto`` loads bf16 on
    the CPU. On an AVX-512 BF16 CPU, bf16 generated 2.5-2.6x the tokens/s of fp32 at batch 16, with other (not
    worse-reading) greedy answers than fp32 (BENCHMARKS.md, "Generation throughput: engines side by side")."""
    import torch

    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        check = getattr(torch.cpu, probe, None)
        if check is not None:
            try:
                if check():
                    return True
            except RuntimeError:
                pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return any(line.startswith("flags") and (" amx_bf16" in line or " avx512_bf16" in line) for line in f)
    except OSError:
        return False


def load_tokenizer(path: str, adapter: str | None = None) -> Any:
    """The tokenizer to use: the adapter's own if it saved one (R2D adds pivot tokens)."""
    from transformers import AutoTokenizer

    src = adapter if adapter and (Path(adapter) / "tokenizer_config.json").is_file() else path
    tok = AutoTokenizer.from_pretrained(src)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


class HFChatModel(Backend):
    """A transformers causal LM (optionally with a PEFT adapter) behind :class:`ChatModel`."""

    greedy_is_deterministic = True
    """A greedy answer depends on the input alone, so an evaluation may share it between defences."""

    def __init__(self, model: Any, tokenizer: Any, *, spec: str, adapter: str | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.spec = spec
        self.adapter = adapter
        self.model.eval()
        self._eos_ids = end_of_turn_ids(tokenizer, model)
        self._pieces: dict[int, str] = {}

    @classmethod
    def from_path(
        cls, path: str, *, spec: str, adapter: str | None = None,
        device: str | None = None, dtype: str | None = None,
    ) -> HFChatModel:
        from transformers import AutoModelForCausalLM

        dev, torch_dtype = pick_device_dtype(device, dtype)
        tok = load_tokenizer(path, adapter)
        extra: dict[str, Any] = {}
        if dev == "cpu":
            from ._attention import register_cpu_attention

            extra["attn_implementation"] = register_cpu_attention()
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, **extra)
        if adapter:
            model = attach_adapter(model, tok, adapter)
            # LoRA weights folded into the base weights: the same function with one matmul per layer instead of
            # three (1.3-1.8x faster generation on CPU, BENCHMARKS.md "Generation throughput: engines side by
            # side"). The PEFT wrapper stays, so the adapter can still be switched off (probes.adapter_off).
            model.merge_adapter()
        model.to(dev)
        return cls(model, tok, spec=spec, adapter=adapter)

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def render(self, conversation: Conversation, prefix: str = "") -> str:
        return render_chat(self.tokenizer, conversation, add_generation_prompt=True,
                           assistant_prefix=prefix)

    def _complete(self, batch: list[Row], config: GenerationConfig, hook: TokenHook | None,
                  report: Report) -> list[Completion]:
        texts = [self.render(r.conversation, r.prefix) for r in batch]
        lengths = [len(self.tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
        # Batches of similar length pad little; the caller's order is restored at the end.
        results: list[Completion | None] = [None] * len(texts)
        start = 0
        for idx in length_batches(lengths, config.batch_size):
            outs = self._generate_batch([texts[i] for i in idx], [batch[i].index for i in idx], config, hook,
                                        seed=None if config.seed is None else config.seed + start)
            for i, out in zip(idx, outs):
                results[i] = out
            start += len(idx)
            report(len(idx))
        return [r for r in results if r is not None]

    def _generate_batch(self, texts: list[str], rows: list[int], config: GenerationConfig,
                        hook: TokenHook | None, seed: int | None) -> list[Completion]:
        import torch
        from transformers import StoppingCriteriaList

        tok = self.tokenizer
        side, tok.padding_side = tok.padding_side, "left"
        try:  # restore: the same tokenizer object may be used for right-padded training batches
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        finally:
            tok.padding_side = side
        prompt_len = enc.input_ids.shape[1]
        # Rows that ended (EOS, stop string) are padded by generate; pads are not shown to hooks.
        ends = [*self._eos_ids, tok.pad_token_id]
        watcher = _HookCriteria(hook, rows, prompt_len, ends, self._piece) if hook else None
        kwargs: dict[str, Any] = dict(
            max_new_tokens=config.max_new_tokens,
            do_sample=not config.greedy,
            eos_token_id=self._eos_ids,
            pad_token_id=tok.pad_token_id,
            return_dict_in_generate=True,
            output_scores=config.logprobs,
        )
        if config.greedy:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(temperature=config.temperature, top_p=config.top_p, top_k=None)
        if config.stop:
            kwargs.update(stop_strings=list(config.stop), tokenizer=tok)
        if watcher:
            kwargs["stopping_criteria"] = StoppingCriteriaList([watcher])
        if seed is not None:
            torch.manual_seed(seed)
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        seqs = out.sequences[:, prompt_len:]
        logps = None
        if config.logprobs:
            logps = self.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
        completions = []
        specials = {tok.pad_token_id, *self._eos_ids}
        for b in range(seqs.shape[0]):
            ids = seqs[b].tolist()
            n = len(ids)
            ended = False
            for j, t in enumerate(ids):
                if t in specials:  # EOS, or padding after a row ended on a stop string
                    n, ended = j, True
                    break
            gen = ids[:n]
            halted = watcher is not None and b in watcher.halted
            if halted:
                n = min(n, watcher.halted[b])
                gen = ids[:n]
            text = tok.decode(gen, skip_special_tokens=True)
            raw = tok.decode([t for t in gen if t not in specials], skip_special_tokens=False)
            hit_stop = False
            for s in config.stop:
                k = text.find(s)
                if k >= 0:
                    text, hit_stop = text[:k], True
                k = raw.find(s)
                if k >= 0:
                    raw = raw[:k]
            reason = "hook" if halted else ("stop" if ended or hit_stop else "length")
            lp = logps[b, :n].tolist() if logps is not None else None
            completions.append(Completion(
                text=text, finish_reason=reason,  # trimmed by Backend.generate (trim_answer)
                token_ids=gen, logprobs=lp, prompt_tokens=int(enc.attention_mask[b].sum()),
                completion_tokens=len(gen), raw_text=raw,
            ))
        return completions

    def _piece(self, token_id: int) -> str:
        """Decoded text of one token, cached per model (a per-instance dict, so the cache never keeps
        a released model alive the way a method-level lru_cache would)."""
        piece = self._pieces.get(token_id)
        if piece is None:
            piece = self._pieces[token_id] = self.tokenizer.decode([token_id], skip_special_tokens=False)
        return piece

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]


class _HookCriteria:
    """A stopping criterion that shows every new token to a hook and halts rows it rejects."""

    def __init__(self, hook: TokenHook, rows: list[int], prompt_len: int, eos: list[int], piece):
        self.hook, self.rows, self.prompt_len, self.eos, self.piece = hook, rows, prompt_len, set(eos), piece
        self.finished: set[int] = set()
        self.halted: dict[int, int] = {}  # batch row -> number of generated tokens kept

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        n_gen = input_ids.shape[1] - self.prompt_len
        stop = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        last = input_ids[:, -1].tolist()
        for b, tid in enumerate(last):
            if b in self.finished:
                stop[b] = True
                continue
            if tid in self.eos:
                self.finished.add(b)
                continue
            event = TokenEvent(row=self.rows[b], token_id=tid, piece=self.piece(tid),
                               generated=input_ids[b, self.prompt_len:])
            if self.hook(event):
                self.finished.add(b)
                self.halted[b] = n_gen
                stop[b] = True
        return stop


def end_of_turn_ids(tokenizer: Any, model: Any) -> list[int]:
    """Token ids that end an assistant turn: the model's EOS ids plus ``<|im_end|>``-style markers."""
    ids: set[int] = set()
    eos = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif eos:
        ids.update(eos)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    for marker in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
        tid = tokenizer.convert_tokens_to_ids(marker)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid >= 0:
            ids.add(tid)
    return sorted(ids)


def attach_adapter(model: Any, tokenizer: Any, adapter: str) -> Any:
    """Load a PEFT adapter, first growing the embeddings if the adapter's tokenizer added tokens."""
    from peft import PeftModel

    if not Path(adapter).is_dir():
        raise SafethinkError(f"adapter {adapter}: no such directory")
    if not (Path(adapter) / "adapter_config.json").is_file():
        raise SafethinkError(f"adapter {adapter}: no adapter_config.json (not a PEFT adapter directory)")
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    return PeftModel.from_pretrained(model, adapter)
