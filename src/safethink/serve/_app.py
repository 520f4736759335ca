"""The OpenAI-compatible HTTP app: a guarded model behind ``/v1/chat/completions``.

The guard decides before any text leaves the server, so a streamed answer is streamed after the
guard has finished (a rolled-back or halted answer is never half-sent). What a guard flagged is
never sent: the answer is checked against ``GuardedOutput.flagged`` once more before it leaves, and
reasoning is withheld unless the server is started with ``reasoning="safe"`` (the steps before the
first flagged step) or ``"full"`` (everything, for debugging). Errors are logged here with a request
id; the client gets the id, never the exception text.
"""

# No `from __future__ import annotations` here: FastAPI reads the route functions' annotations
# (``request: Request``) at definition time, and Request is imported inside create_app.

import asyncio
import contextlib
import dataclasses
import hmac
import json
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from ..errors import MissingExtraError
from ..guard import BLOCKING_ACTIONS, GUARDS, Guard, GuardedOutput, ReasoningMode, seal
from ..models import ChatModel, GenerationConfig
from ._batcher import MicroBatcher
from ._schema import (
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    GuardInfo,
    ModelCard,
    ModelList,
    ResponseMessage,
    Usage,
    error_body,
)

API_KEY_ENV = "SAFETHINK_API_KEY"
REASONING_MODES: tuple[ReasoningMode, ...] = ("none", "safe", "full")

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None, request_id: str | None = None):
        super().__init__(message)
        self.status, self.body = status, error_body(message, type=type, code=code, param=param)
        self.request_id = request_id


def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex[:24]}"


def server_error(request_id: str) -> ApiError:
    """The 500 a client sees: the request id to quote, never the internal error."""
    return ApiError(500, f"The server could not answer this request. Request id: {request_id} "
                         "(the error is in the server log).", type="server_error", code="internal_error",
                    request_id=request_id)


def create_app(
    model: ChatModel,
    guard: Guard | str = "none",
    *,
    api_key: str | None = None,
    model_name: str | None = None,
    max_request_bytes: int = 1_000_000,
    max_concurrency: int = 64,
    timeout_s: float = 300.0,
    max_batch: int = 8,
    batch_window_s: float = 0.01,
    default_max_tokens: int = 256,
    max_tokens_limit: int = 4096,
    reasoning: ReasoningMode = "none",
) -> Any:
    """Build the FastAPI app.

    ``api_key`` (else env ``SAFETHINK_API_KEY``; neither = no auth) is checked as a Bearer token
    on ``/v1/*``. Requests over ``max_request_bytes`` get 413, more than ``max_concurrency`` in
    flight get 429, a generation that takes over ``timeout_s`` gets 504. Concurrent requests are
    micro-batched (``max_batch``, ``batch_window_s``). ``reasoning`` is how much of the guard's
    reasoning a client may get: ``none`` (default), ``safe`` (only the steps before the first flagged
    step) or ``full`` (all of it, flagged steps included: for debugging). A request can only narrow it
    (``include_reasoning: false``). A failed generation is a 500 with a request id; the error is logged.
    """
    if reasoning not in REASONING_MODES:
        raise ValueError(f"reasoning={reasoning!r}; expected one of {', '.join(REASONING_MODES)}")
    try:
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse, StreamingResponse
        from starlette.exceptions import HTTPException as StarletteHTTPException
    except ImportError:
        raise MissingExtraError("fastapi", "serve", "the safethink server") from None

    guard_obj: Guard = GUARDS.create(guard) if isinstance(guard, str) else guard
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
    served = model_name or model.spec
    created = int(time.time())
    batcher = MicroBatcher(model, guard_obj, max_batch=max_batch, window_s=batch_window_s)
    state = {"in_flight": 0}

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(batcher.close)

    app = FastAPI(title="safethink", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.batcher = batcher
    app.state.guard = guard_obj

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        if exc.request_id:
            headers["x-request-id"] = exc.request_id
        return JSONResponse(exc.body, status_code=exc.status, headers=headers or None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        rid = new_request_id()
        log.error("request %s: unexpected server error", rid, exc_info=exc)
        err = server_error(rid)
        return JSONResponse(err.body, status_code=500, headers={"x-request-id": rid})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return JSONResponse(error_body(str(exc.detail), code=code), status_code=exc.status_code)

    def check_auth(request: Request) -> None:
        if key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
            raise ApiError(401, "Incorrect or missing API key. Send 'Authorization: Bearer <key>'.",
                           code="invalid_api_key")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        s = batcher.stats
        return {"status": "ok", "model": served, "guard": guard_obj.name, "reasoning": reasoning,
                "in_flight": state["in_flight"],
                "requests": s.requests, "batches": s.batches, "largest_batch": s.largest_batch}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check_auth(request)
        return ModelList(data=[ModelCard(id=served, created=created)]).model_dump()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        check_auth(request)
        req = parse_request(await read_body(request, max_request_bytes))
        if req.model != served:
            raise ApiError(404, f"The model '{req.model}' does not exist; this server serves '{served}'.",
                           code="model_not_found", param="model")
        conversation = to_conversation(req)
        config = to_config(req, default_max_tokens, max_tokens_limit, max_batch)
        if state["in_flight"] >= max_concurrency:
            raise ApiError(429, f"Too many requests in flight (limit {max_concurrency}); retry shortly.",
                           type="rate_limit_error", code="rate_limit_exceeded")
        state["in_flight"] += 1
        rid = new_request_id()
        try:
            fut = asyncio.wrap_future(batcher.submit(conversation, config, request_id=rid))
            try:
                out = await asyncio.wait_for(fut, timeout_s)
            except asyncio.TimeoutError:
                raise ApiError(504, f"Generation took longer than {timeout_s:g} s.", type="timeout_error",
                               code="timeout", request_id=rid) from None
            except Exception as e:  # the guard or the model failed on this batch (logged by the batcher)
                log.error("request %s: generation failed (%s)", rid, type(e).__name__)
                raise server_error(rid) from None
        finally:
            state["in_flight"] -= 1
        mode: ReasoningMode = "none" if req.include_reasoning is False else reasoning
        placement = "inline" if req.include_reasoning else "field"
        completion = build_completion(out, served, guard_obj.name, mode, placement)
        if not req.stream:
            return completion.model_dump(exclude_none=True)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return StreamingResponse(sse_chunks(completion, include_usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    return app


async def read_body(request: Any, limit: int) -> bytes:
    """Read the body, refusing more than ``limit`` bytes without reading it all first."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"Request body is {declared} bytes; the limit is {limit}.", code="request_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"Request body is over the limit of {limit} bytes.", code="request_too_large")
    return bytes(body)


def parse_request(body: bytes) -> ChatCompletionRequest:
    from pydantic import ValidationError

    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"The request body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        param = ".".join(str(x) for x in first["loc"]) or None
        raise ApiError(400, f"Invalid request: {param}: {first['msg']}", param=param,
                       code="invalid_value") from None


def to_conversation(req: ChatCompletionRequest) -> list[dict[str, str]]:
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


def finish_reason(out: GuardedOutput) -> str:
    if out.action in BLOCKING_ACTIONS:
        return "content_filter"
    return "length" if out.finish_reason == "length" else "stop"


def build_completion(out: GuardedOutput, model: str, guard: str, mode: ReasoningMode = "none",
                     placement: str = "field") -> ChatCompletion:
    """The response for one guarded output. The output is sealed once more here (a text that shows a
    flagged step becomes a refusal), whatever the guard and its options did; ``mode`` picks the
    reasoning shown, ``placement`` puts it in ``reasoning_content`` (``field``) or before the answer."""
    shown = seal(dataclasses.replace(out, info=dict(out.info), flagged=list(out.flagged)))
    if shown.text != out.text:
        log.warning("guard %s: an answer showed a flagged step; it was replaced with a refusal", guard)
    out = shown
    content, reasoning = out.text, out.shown_reasoning(mode)
    if placement == "inline" and reasoning:
        content = f"{reasoning}\n\n{content}"
        reasoning = None
    prompt = int(out.info.get("prompt_tokens") or 0)
    done = int(out.info.get("completion_tokens") or 0)
    return ChatCompletion(
        id=f"chatcmpl-{uuid.uuid4().hex[:24]}", created=int(time.time()), model=model,
        choices=[Choice(message=ResponseMessage(content=content, reasoning_content=reasoning or None),
                        finish_reason=finish_reason(out))],  # type: ignore[arg-type]
        usage=Usage(prompt_tokens=prompt, completion_tokens=done, total_tokens=prompt + done),
        safethink_guard=GuardInfo(name=guard, action=out.action),
    )


_PIECE = re.compile(r"\s*\S+\s*|\s+")


async def sse_chunks(c: ChatCompletion, include_usage: bool) -> AsyncIterator[str]:
    """The finished completion as OpenAI ``chat.completion.chunk`` server-sent events."""
    msg, choice = c.choices[0].message, c.choices[0]

    def event(delta: dict[str, Any], finish: str | None = None, usage: Usage | None = None, choices: bool = True) -> str:
        body: dict[str, Any] = {"id": c.id, "object": "chat.completion.chunk", "created": c.created, "model": c.model,
                                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
                                if choices else []}
        if usage is not None:
            body["usage"] = usage.model_dump()
        elif include_usage:
            body["usage"] = None
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    yield event({"role": "assistant", "content": ""})
    for piece in _PIECE.findall(msg.reasoning_content or ""):
        yield event({"reasoning_content": piece})
    for piece in _PIECE.findall(msg.content):
        yield event({"content": piece})
    yield event({}, finish=choice.finish_reason)
    if include_usage:
        yield event({}, usage=c.usage, choices=False)
    yield "data: [DONE]\n\n"
