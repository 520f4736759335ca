"""Model spec strings users type on the command line.

==========================  =================================================
``smollm2-135m``            the bundled default (SmolLM2-135M-Instruct, offline)
``hf:<hub id or path>``     a transformers model from a local path or the local HF cache
``openai:<model>@<url>``    any OpenAI-compatible HTTP endpoint (vLLM, TGI, OpenAI, safethink serve)
``vllm:<hub id or path>``   vLLM in-process (extra ``vllm``)
``llamacpp:<file.gguf>``    llama.cpp (extra ``llamacpp``)
``mock:<file.jsonl>``       scripted answers replayed in order (tests, CI)
==========================  =================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import SpecError

BackendKind = Literal["bundled", "hf", "openai", "vllm", "llamacpp", "mock"]

BUNDLED_ALIASES = ("smollm2-135m", "smollm2-135m-instruct", "default")


@dataclass(frozen=True)
class ModelSpec:
    kind: BackendKind
    target: str
    """Hub id / path / file for local kinds; the model name for ``openai``."""
    base_url: str | None = None
    """Endpoint for ``openai`` specs."""

    def __str__(self) -> str:
        if self.kind == "bundled":
            return self.target
        if self.kind == "openai":
            return f"openai:{self.target}@{self.base_url}"
        return f"{self.kind}:{self.target}"


def parse_model_spec(spec: str) -> ModelSpec:
    """Parse a spec string; raise :class:`SpecError` with the accepted forms if it is not one."""
    s = spec.strip()
    if s.lower() in BUNDLED_ALIASES:
        return ModelSpec("bundled", "smollm2-135m")
    kind, sep, rest = s.partition(":")
    if sep and kind in ("hf", "vllm", "llamacpp", "mock"):
        if not rest:
            raise SpecError(f"model spec {spec!r}: nothing after '{kind}:'")
        return ModelSpec(kind, rest)  # type: ignore[arg-type]
    if sep and kind == "openai":
        model, at, url = rest.rpartition("@")
        if not at or not model or not url.startswith(("http://", "https://")):
            raise SpecError(
                f"model spec {spec!r}: expected 'openai:<model>@<http(s)://host:port/v1>'"
            )
        return ModelSpec("openai", model, url.rstrip("/"))
    raise SpecError(
        f"unknown model spec {spec!r}; expected one of: smollm2-135m, hf:<hub id or path>, "
        "openai:<model>@<url>, vllm:<hub id or path>, llamacpp:<file.gguf>, mock:<answers.jsonl>"
    )
