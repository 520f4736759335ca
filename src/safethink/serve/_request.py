"""From request bytes to what the batcher runs: read, parse, validate, fit into the context.

Every problem with a request is an :class:`ApiError` (a 4xx with an OpenAI-style body), never an
exception that would become a 500: bodies over the size limit, invalid JSON, JSON nested deeper than
``MAX_JSON_DEPTH``, numbers Python will not read (integers over 4300 digits), wrong types and
out-of-range values (pydantic), text that is not valid Unicode (lone surrogates, which tokenizers
reject), and prompts that leave no room for the completion in the model's context.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ..models import Conversation, GenerationConfig
from ._errors import ApiError
from ._schema import ChatCompletionRequest

MAX_JSON_DEPTH = 64
"""Arrays and objects nested deeper than this are refused (a real request nests about 5 deep)."""


async def read_body(request: Any, limit: int) -> bytes:
    """Read the body, refusing more than ``limit`` bytes without reading it all first."""
    from starlette.requests import ClientDisconnect

    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"Request body is {declared} bytes; the limit is {limit}.", code="request_too_large")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ApiError(413, f"Request body is over the limit of {limit} bytes.", code="request_too_large")
    except ClientDisconnect:
        raise ApiError(499, "The client closed the connection before the request body was read.",
                       code="client_closed_request") from None
    return bytes(body)


def json_problem(value: Any, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """Why a parsed JSON value cannot be served (None when it can): arrays/objects nested deeper than
    ``max_depth``, or a string (key or value) with a lone surrogate, which is not Unicode text
    (JSON allows the escape; tokenizers and the UTF-8 response encoder do not). Iterative: no recursion."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, str):
            if not is_unicode(v):
                return "a string in the request body contains a lone surrogate (\\ud800-\\udfff): not valid Unicode"
            continue
        children = [*v, *v.values()] if isinstance(v, dict) else v if isinstance(v, list) else None
        if children is None:
            continue
        if depth > max_depth:
            return f"the request body nests arrays or objects more than {max_depth} deep"
        stack.extend((c, depth + 1) for c in children)
    return None


def is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_request(body: bytes) -> ChatCompletionRequest:
    from pydantic import ValidationError

    try:
        data = json.loads(body)
    except RecursionError:
        raise ApiError(400, f"The request body nests arrays or objects more than {MAX_JSON_DEPTH} deep.",
                       code="invalid_json") from None
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError, integers over Python's digit limit
        raise ApiError(400, f"The request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    problem = json_problem(data)
    if problem:
        raise ApiError(400, f"Invalid request: {problem}.", code="invalid_json")
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as e:
        first = e.errors(include_url=False, include_input=False)[0]
        param = ".".join(str(x) for x in first["loc"]) or None
        raise ApiError(400, f"Invalid request: {param}: {first['msg']}", param=param,
                       code="invalid_value") from None


def to_conversation(req: ChatCompletionRequest) -> Conversation:
    conv = []
    for i, m in enumerate(req.messages):
        try:
            content = m.text()
        except ValueError as e:
            raise ApiError(400, f"messages[{i}].content: {e}", param=f"messages.{i}.content") from None
        conv.append({"role": "system" if m.role == "developer" else m.role, "content": content})
    if not any(m["role"] == "user" for m in conv):
        raise ApiError(400, "messages must contain at least one user message", param="messages")
    return conv


def to_config(req: ChatCompletionRequest, default_max: int, limit: int, batch: int) -> GenerationConfig:
    wanted = req.max_completion_tokens or req.max_tokens or default_max
    if wanted > limit:
        raise ApiError(400, f"max_tokens {wanted} is over this server's limit of {limit}", param="max_tokens")
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    try:
        return GenerationConfig(max_new_tokens=wanted, temperature=req.temperature or 0.0,
                                top_p=req.top_p if req.top_p is not None else 1.0, stop=stop, seed=req.seed,
                                batch_size=batch)
    except ValueError as e:
        raise ApiError(400, str(e)) from None


def fit_context(config: GenerationConfig, prompt_tokens: int, context: int, *, asked: bool) -> GenerationConfig:
    """``config`` when prompt and completion fit in ``context`` tokens. A completion length the client
    asked for (``asked``) that does not fit is a 400; the server's default is shortened to fit."""
    if prompt_tokens + config.max_new_tokens <= context:
        return config
    room = context - prompt_tokens
    if asked or room < 1:
        raise ApiError(400, f"This model's maximum context length is {context} tokens. However, you requested "
                            f"{prompt_tokens + config.max_new_tokens} tokens ({prompt_tokens} in the messages, "
                            f"{config.max_new_tokens} in the completion). Please reduce the length of the "
                            "messages or the completion (max_tokens).",
                       param="messages", code="context_length_exceeded")
    return dataclasses.replace(config, max_new_tokens=room)
