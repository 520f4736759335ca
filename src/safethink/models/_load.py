"""Build a :class:`ChatModel` from a spec string."""

from __future__ import annotations

from ..errors import SpecError
from ._spec import ModelSpec, parse_model_spec
from ._types import ChatModel


def load_model(
    spec: str | ModelSpec,
    *,
    adapter: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    **options,
) -> ChatModel:
    """Load the model a spec names. Heavy optional backends are imported only here."""
    ms = spec if isinstance(spec, ModelSpec) else parse_model_spec(spec)
    if adapter and ms.kind not in ("bundled", "hf", "vllm"):
        raise SpecError(f"--adapter works with local models (bundled, hf:, vllm:), not {ms.kind}:")
    if ms.kind in ("bundled", "hf"):
        from ._hf import HFChatModel, resolve_local

        if ms.kind == "bundled":
            from ._bundled import bundled_model_dir

            path = str(bundled_model_dir())
        else:
            path, _ = resolve_local(ms.target)
        return HFChatModel.from_path(path, spec=str(ms), adapter=adapter, device=device, dtype=dtype)
    if ms.kind == "openai":
        from ._openai import OpenAIChatModel

        return OpenAIChatModel(model=ms.target, base_url=ms.base_url or "", spec=str(ms), **options)
    if ms.kind == "vllm":
        from ._vllm import VLLMChatModel

        return VLLMChatModel.from_target(ms.target, spec=str(ms), adapter=adapter, dtype=dtype, **options)
    if ms.kind == "llamacpp":
        from ._llamacpp import LlamaCppChatModel

        return LlamaCppChatModel.from_file(ms.target, spec=str(ms), **options)
    if ms.kind == "mock":
        from ._mock import MockChatModel

        return MockChatModel.from_file(ms.target, spec=str(ms), **options)
    raise SpecError(f"unsupported backend {ms.kind}")
