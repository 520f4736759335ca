"""The OpenAI-compatible HTTP app: a guarded model behind ``/v1/chat/completions``.

The guard decides before any text leaves the server, so a streamed answer is streamed after the
guard has finished (a rolled-back or halted answer is never half-sent). What a guard flagged is
never sent: the answer is checked against ``GuardedOutput.flagged`` once more before it leaves, and
reasoning is withheld unless the server is started with ``reasoning="safe"`` (the steps before the
first flagged step) or ``"full"`` (everything, for debugging). Errors are logged here with a request
id; the client gets the id, never the exception text.

A request that times out, or whose client disconnects, is stopped (``MicroBatcher.cancel``): its
generation ends at the next decoding step, and it counts against ``max_concurrency`` until it has.
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
from collections.abc import AsyncIterator
from concurrent.futures import Future
from typing import Any

from ..errors import MissingExtraError
from ..guard import BLOCKING_ACTIONS, GUARDS, Guard, GuardedOutput, ReasoningMode, seal
from ..models import ChatModel, Conversation, GenerationConfig
from ._batcher import MicroBatcher
from ._cancel import GenerationCancelled
from ._context import context_length, prompt_counter
from ._errors import ApiError, new_request_id, server_error
from ._request import fit_context, parse_request, read_body, to_config, to_conversation
from ._schema import ChatCompletion, Choice, GuardInfo, ModelCard, ModelList, ResponseMessage, Usage, error_body

API_KEY_ENV = "SAFETHINK_API_KEY"
REASONING_MODES: tuple[ReasoningMode, ...] = ("none", "safe", "full")

log = logging.getLogger(__name__)


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
    on ``/v1/*``. Requests over ``max_request_bytes`` get 413; more than ``max_concurrency`` requests
    queued or generating get 429 (a stopped request counts until its generation has stopped); a request
    not answered within ``timeout_s`` gets 504 and is stopped, as is one whose client disconnects.
    A prompt plus ``max_tokens`` over the model's context length gets 400. Concurrent requests are
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
    context = context_length(model)
    count_prompt = prompt_counter(model) if context is not None else None

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
                "in_flight": batcher.in_flight, "max_concurrency": max_concurrency, "context_length": context,
                "requests": s.requests, "batches": s.batches, "largest_batch": s.largest_batch,
                "cancelled": s.cancelled, "stopped": s.stopped}

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
        if count_prompt is not None and context is not None:
            prompt_tokens = await asyncio.to_thread(count_prompt, conversation)
            config = fit_context(config, prompt_tokens, context,
                                 asked=bool(req.max_completion_tokens or req.max_tokens))
        if batcher.in_flight >= max_concurrency:
            raise ApiError(429, f"Too many requests in flight (limit {max_concurrency}); retry shortly.",
                           type="rate_limit_error", code="rate_limit_exceeded")
        rid = new_request_id()
        out = await answer(request, conversation, config, rid)
        mode: ReasoningMode = "none" if req.include_reasoning is False else reasoning
        placement = "inline" if req.include_reasoning else "field"
        completion = build_completion(out, served, guard_obj.name, mode, placement, completion_id(rid))
        if not req.stream:
            return JSONResponse(completion.model_dump(exclude_none=True), headers={"x-request-id": rid})
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return StreamingResponse(sse_chunks(completion, include_usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "x-request-id": rid})

    async def answer(request: Request, conversation: Conversation, config: GenerationConfig,
                     rid: str) -> GuardedOutput:
        """The guarded output, or stop the request when it times out or its client disconnects."""
        try:
            fut = batcher.submit(conversation, config, request_id=rid)
        except RuntimeError:  # shutting down
            raise ApiError(503, "The server is shutting down.", type="server_error", code="unavailable",
                           request_id=rid) from None
        try:
            return await wait_for(fut, request, rid)
        except BaseException:  # timed out, client gone, or the handler itself was cancelled
            batcher.cancel(fut)
            raise

    async def wait_for(fut: Future, request: Request, rid: str) -> GuardedOutput:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        waiting = asyncio.wrap_future(fut)
        gone = asyncio.ensure_future(client_disconnected(request))
        watch: set[asyncio.Future] = {waiting, gone}
        try:
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    raise ApiError(504, f"Generation took longer than {timeout_s:g} s; it was stopped.",
                                   type="timeout_error", code="timeout", request_id=rid)
                done, _ = await asyncio.wait(watch, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                if waiting in done:
                    break
                if gone in done:
                    if gone.result():
                        log.info("request %s: the client disconnected; its generation is stopped", rid)
                        raise ApiError(499, "The client closed the connection.", code="client_closed_request",
                                       request_id=rid)
                    watch = {waiting}  # this connection cannot report a disconnect: wait for the answer
        finally:
            gone.cancel()
            if not waiting.done():
                waiting.cancel()  # no 'exception never retrieved' when the stopped batch ends later
        try:
            return waiting.result()
        except GenerationCancelled:  # stopped by the server shutting down
            raise ApiError(503, "The server is shutting down.", type="server_error", code="unavailable",
                           request_id=rid) from None
        except Exception as e:  # the guard or the model failed on this batch (logged by the batcher)
            log.error("request %s: generation failed (%s)", rid, type(e).__name__)
            raise server_error(rid) from None

    return app


async def client_disconnected(request: Any) -> bool:
    """Wait until the client disconnects (True); False when this connection cannot tell."""
    try:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return True
    except Exception:  # noqa: BLE001 - a server whose receive() fails here: stop watching, keep serving
        return False


def completion_id(request_id: str) -> str:
    """The completion id, derived from the request id (``x-request-id``) so logs and answers pair up."""
    return f"chatcmpl-{request_id.removeprefix('req_')}"


def finish_reason(out: GuardedOutput) -> str:
    if out.action in BLOCKING_ACTIONS:
        return "content_filter"
    return "length" if out.finish_reason == "length" else "stop"


def build_completion(out: GuardedOutput, model: str, guard: str, mode: ReasoningMode = "none",
                     placement: str = "field", id: str | None = None) -> ChatCompletion:
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
        id=id or completion_id(new_request_id()), created=int(time.time()), model=model,
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
