"""The OpenAI chat-completions wire format (the subset safethink serves), as pydantic models."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, field_validator

INT64 = (-(2**63), 2**63 - 1)
"""The range of ``seed`` (OpenAI's API takes a 64-bit integer; torch.manual_seed takes no more)."""
MAX_STOP_CHARS = 256
"""Longest stop string: transformers precomputes a table per stop string over the whole vocabulary."""


def _number(v: Any) -> Any:
    """Numbers only: JSON ``true`` or ``"5"`` is a wrong type here, not 1 or 5 (a whole float such as
    ``5.0`` still reads as the integer 5)."""
    if isinstance(v, (bool, str, bytes)):
        raise ValueError("Input should be a number, not " + ("a boolean" if isinstance(v, bool) else "a string"))
    return v


Int = Annotated[int, BeforeValidator(_number)]
Float = Annotated[float, BeforeValidator(_number)]


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    # Clients send extra per-message fields (name, tool_call_id...); they do not change the text.
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        """The message as plain text; only text content parts are supported."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for p in self.content:
            if p.type != "text" or p.text is None:
                raise ValueError(f"content part type {p.type!r} is not supported (only 'text')")
            parts.append(p.text)
        return "".join(parts)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: StrictBool = False


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``. Unknown fields are accepted and ignored (OpenAI clients send
    many optional ones); fields that would change the answer and are not supported are rejected."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: Int | None = Field(default=None, ge=1)
    max_completion_tokens: Int | None = Field(default=None, ge=1)
    temperature: Float | None = Field(default=None, ge=0, le=2)
    top_p: Float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: Int | None = Field(default=None, ge=INT64[0], le=INT64[1])
    n: Int = Field(default=1, ge=1, le=1, description="only one choice per request is supported")
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    include_reasoning: StrictBool | None = None
    """safethink extension. Absent: the reasoning the server allows (``--reasoning``: none by default)
    in ``reasoning_content``; true: inlined at the start of ``content`` instead; false: not returned."""
    tools: list[Any] | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        for s in [v] if isinstance(v, str) else v or []:
            if not s:
                raise ValueError("a stop sequence must not be empty")
            if len(s) > MAX_STOP_CHARS:
                raise ValueError(f"a stop sequence may have at most {MAX_STOP_CHARS} characters")
        return v

    @field_validator("tools")
    @classmethod
    def _tools(cls, v: list[Any] | None) -> list[Any] | None:
        if v:
            raise ValueError("tool calling is not supported by this server")
        return v


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    reasoning_content: str | None = None


FinishReason = Literal["stop", "length", "content_filter"]


class Choice(BaseModel):
    index: int = 0
    message: ResponseMessage
    finish_reason: FinishReason
    logprobs: None = None


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class GuardInfo(BaseModel):
    """safethink extension: which guard answered and what it did."""

    name: str
    action: str | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    safethink_guard: GuardInfo | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "safethink"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def error_body(message: str, *, type: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> dict[str, Any]:
    """The OpenAI error envelope."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}
