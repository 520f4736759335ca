"""Retain answers: benign prompts answered by the target model itself (self-distillation), batched
and cached on disk so that a re-run (or a resumed build) never generates the same answer twice.

The cache is an append-only JSONL journal per (model, generation settings); a line torn by a
crash is ignored. Answers are generated in fixed groups, so a resumed build batches exactly as
an uninterrupted one would (batch composition can change greedy outputs through padding).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._home import safethink_home
from ..io import append_log, read_log


def _key(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def trim_to_sentence(text: str) -> str:
    """Cut a length-truncated answer back to its last full sentence (if one ends past a third)."""
    text = text.rstrip()
    m = list(re.finditer(r"[.!?](?:[\"')\]]*)(?=\s|$)|\n\n", text))
    if m and m[-1].end() > len(text) // 3:
        return text[: m[-1].end()].rstrip()
    return text


class RetainAnswerer:
    """Answers benign prompts with ``load_model(model).generate``; the model loads only on a cache miss."""

    def __init__(self, model: str = "smollm2-135m", *, adapter: str | None = None, max_new_tokens: int = 128,
                 batch_size: int = 16, cache_dir: str | Path | None = None, model_obj: Any = None,
                 device: str | None = None):
        self.model_spec = model
        self.adapter = adapter
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.device = device
        self._model = model_obj
        root = Path(cache_dir) if cache_dir else safethink_home() / "cache" / "retain"
        settings = _key(model, adapter or "", str(max_new_tokens), "greedy", str(batch_size))
        self.cache_path = root / f"{settings[:24]}.jsonl"
        self._cache: dict[str, str] | None = None
        self.generated = 0

    def _load_cache(self) -> dict[str, str]:
        if self._cache is None:
            self._cache = {}
            for obj in read_log(self.cache_path):  # a line torn by a crash is left out: regenerated
                if isinstance(obj, dict) and isinstance(obj.get("key"), str) and isinstance(obj.get("answer"), str):
                    self._cache[obj["key"]] = obj["answer"]
        return self._cache

    def _model_obj(self) -> Any:
        if self._model is None:
            from ..models import load_model

            self._model = load_model(self.model_spec, adapter=self.adapter, device=self.device)
        return self._model

    def answer(self, prompts: Sequence[str], progress: Callable[[int], None] | None = None) -> list[str]:
        """One answer per prompt, in order. Prompts are answered in fixed groups of ``batch_size``;
        ``progress`` gets the number of prompts answered so far (cached ones included): 0 first, then after
        each group."""
        from ..models import GenerationConfig

        cache = self._load_cache()
        keys = [_key(p) for p in prompts]
        if progress:
            progress(0)
        for start in range(0, len(prompts), self.batch_size):
            group = list(range(start, min(start + self.batch_size, len(prompts))))
            if all(keys[i] in cache for i in group):
                if progress:
                    progress(group[-1] + 1)
                continue
            cfg = GenerationConfig(max_new_tokens=self.max_new_tokens, batch_size=self.batch_size)
            outs = self._model_obj().generate([[{"role": "user", "content": prompts[i]}] for i in group], cfg)
            lines = []
            for i, out in zip(group, outs):
                text = out.text.strip()
                if out.finish_reason == "length":
                    text = trim_to_sentence(text)
                cache[keys[i]] = text or "I'm not sure how to answer that."
                lines.append({"key": keys[i], "answer": cache[keys[i]]})
            self.generated += len(group)
            append_log(self.cache_path, lines)
            if progress:
                progress(group[-1] + 1)
        return [cache[k] for k in keys]
