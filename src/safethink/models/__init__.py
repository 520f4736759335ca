"""Model backends behind one interface (:class:`ChatModel`) and spec-string loading."""

from ._chat import render_chat, split_prompt_completion, validate_messages
from ._load import load_model
from ._spec import ModelSpec, parse_model_spec
from ._types import (
    ProgressFn,
    ChatModel,
    Completion,
    Conversation,
    GenerationConfig,
    Message,
    TokenEvent,
    TokenHook,
)

# The public surface. Also importable from here, for safethink's own modules and tests: ProgressFn,
# validate_messages.
__all__ = [
    "ChatModel",
    "Completion",
    "Conversation",
    "GenerationConfig",
    "Message",
    "ModelSpec",
    "TokenEvent",
    "TokenHook",
    "load_model",
    "parse_model_spec",
    "render_chat",
    "split_prompt_completion",
]
