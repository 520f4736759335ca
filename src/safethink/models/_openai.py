"""OpenAI-compatible HTTP backend: any ``/v1/chat/completions`` server (vLLM, TGI, llama.cpp
server, OpenAI, ``safethink serve``).

The core is async (:meth:`OpenAIChatModel.agenerate`): one httpx client per call, at most
``max_concurrency`` requests in flight. Requests go through the shared :class:`~._http.Endpoint`:
retries with exponential backoff and full jitter on 408, 409, 429, 5xx, timeouts, connection errors
and replies that are not the API (honouring ``Retry-After``); :class:`EndpointError` when the
endpoint fails as a whole (retries used up, HTTP 401/403/404), and a :class:`BackendError` naming
the status and the server's message for any other 4xx (about the one request).
:meth:`generate` is the synchronous :class:`ChatModel` entry point; it also works when called from
inside a running event loop (it then runs its own loop in a worker thread).
:meth:`complete_prompts` sends plain-text prompts to the ``/completions`` route the same way.

With a token hook the request is streamed and the hook sees every text delta
(``TokenEvent.token_id`` is None: the server sends text, not ids); a hook that returns True closes
the stream, which makes vLLM abort the request server-side.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar

from ..errors import BackendError, EndpointError
from ._chat import validate_messages
from ._http import Endpoint, Retryable, RetryPolicy, chat_choice, check_status, completion_choice, error_text
from ._base import Backend, Report, Row, make_rows, reporter
from ._types import Completion, Conversation, GenerationConfig, ProgressFn, TokenEvent, TokenHook

PrefixStyle = Literal["vllm", "plain"]
API_KEY_ENV = ("SAFETHINK_API_KEY", "OPENAI_API_KEY")
T = TypeVar("T")


class OpenAIChatModel(Backend):
    """A model behind an OpenAI-compatible chat completions endpoint.

    Prefixes (prefilled assistant text) are sent as a final assistant message. With
    ``prefix_style="vllm"`` (the default) the request also carries vLLM's
    ``continue_final_message=True, add_generation_prompt=False`` so the server continues that
    message instead of starting a new turn; use ``"plain"`` for servers that reject unknown
    fields (OpenAI itself), which may or may not continue the message. The ``"vllm"`` style also
    asks streamed replies for their token counts (``stream_options: {"include_usage": true}``).
    """

    hook_mode: Literal["live", "post-hoc"] = "live"
    trim_answers = False  # the server's text as it sent it

    def __init__(
        self,
        model: str,
        base_url: str,
        spec: str | None = None,
        *,
        api_key: str | None = None,
        max_concurrency: int = 8,
        timeout_s: float | None = None,
        max_retries: int | None = None,
        backoff_base_s: float | None = None,
        backoff_cap_s: float | None = None,
        extra_body: dict[str, Any] | None = None,
        prefix_style: PrefixStyle = "vllm",
    ):
        """
        Args:
            model: the model name the server knows (the ``model`` field of each request).
            base_url: the API root, e.g. ``http://127.0.0.1:8000/v1``.
            spec: the spec string recorded in results (default ``openai:<model>@<base_url>``).
            api_key: bearer token; default ``$SAFETHINK_API_KEY`` then ``$OPENAI_API_KEY``.
            max_concurrency: requests in flight at once (also capped by ``config.batch_size``).
            timeout_s: connect / read / write timeout of one attempt, in seconds (default 60).
            max_retries: retries after the first attempt for retryable failures (default 5).
            backoff_base_s: first backoff ceiling; doubles each retry, full jitter (default 0.5).
            backoff_cap_s: the longest wait between attempts, also caps ``Retry-After`` (default 30).
            extra_body: fields merged into every request body last (server-specific options,
                e.g. ``{"skip_special_tokens": False}`` for vLLM to keep R2D pivot tokens).
            prefix_style: how prefixes are requested (see the class docstring).

        A retry setting left as None is read from ``$SAFETHINK_HTTP_<SETTING>`` (e.g.
        ``SAFETHINK_HTTP_TIMEOUT_S``), else the default above.
        """
        if max_concurrency < 1:
            raise ValueError("need max_concurrency >= 1")
        if prefix_style not in ("vllm", "plain"):
            raise ValueError(f"prefix_style {prefix_style!r}: expected 'vllm' or 'plain'")
        key = api_key or next((os.environ[k] for k in API_KEY_ENV if os.environ.get(k)), None)
        retry = RetryPolicy.resolve(timeout_s=timeout_s, max_retries=max_retries, backoff_base_s=backoff_base_s,
                                    backoff_cap_s=backoff_cap_s)
        self.endpoint = Endpoint(base_url, api_key=key, retry=retry)
        self.model = model
        self.base_url = self.endpoint.base_url
        self.spec = spec or f"openai:{model}@{self.base_url}"
        self.max_concurrency = max_concurrency
        self.extra_body = dict(extra_body or {})
        self.prefix_style = prefix_style

    def __repr__(self) -> str:  # never shows the API key
        return f"OpenAIChatModel(model={self.model!r}, base_url={self.base_url!r})"

    @property
    def retry(self) -> RetryPolicy:
        return self.endpoint.retry

    # -- public API (``generate`` is :meth:`Backend.generate`) --------------------------------

    async def agenerate(
        self,
        conversations: Sequence[Conversation],
        config: GenerationConfig = GenerationConfig(),
        *,
        prefixes: Sequence[str] | None = None,
        hook: TokenHook | None = None,
        progress: ProgressFn | None = None,
    ) -> list[Completion]:
        """Answer every conversation, in order, with up to ``min(max_concurrency,
        config.batch_size)`` requests in flight. ``seed`` (if set) is sent as ``seed + row`` so
        identical prompts in one call still get independent samples."""
        rows = make_rows(conversations, prefixes)
        return self._finish(rows, await self._acomplete(rows, config, hook, reporter(progress)))

    def _complete(self, batch: list[Row], config: GenerationConfig, hook: TokenHook | None,
                  report: Report) -> list[Completion]:
        """The synchronous :class:`ChatModel` path of :meth:`generate` (see :meth:`agenerate`)."""
        return _run_sync(lambda: self._acomplete(batch, config, hook, report))

    async def _acomplete(self, batch: list[Row], config: GenerationConfig, hook: TokenHook | None,
                         report: Report) -> list[Completion]:
        convs = [validate_messages(list(r.conversation), where=f"conversations[{r.index}]") for r in batch]

        def one(client: Any, k: int) -> Awaitable[Completion]:
            return self._request(client, batch[k].index, convs[k], batch[k].prefix, config, hook)

        return await self._gather(len(batch), config, one, report)

    def complete_prompts(self, prompts: Sequence[str], config: GenerationConfig = GenerationConfig(), *,
                         progress: ProgressFn | None = None) -> list[Completion]:
        """Plain-text prompts to the endpoint's ``/completions`` route (vLLM, TGI and llama.cpp serve
        it for every model, with or without a chat template), in order, with the same concurrency
        and retries as :meth:`generate`."""
        return _run_sync(lambda: self.acomplete_prompts(prompts, config, progress=progress))

    async def acomplete_prompts(self, prompts: Sequence[str], config: GenerationConfig = GenerationConfig(), *,
                                progress: ProgressFn | None = None) -> list[Completion]:
        def one(client: Any, row: int) -> Awaitable[Completion]:
            body: dict[str, Any] = {"model": self.model, "prompt": prompts[row],
                                    "max_tokens": config.max_new_tokens, "temperature": config.temperature}
            if config.seed is not None:
                body["seed"] = config.seed + row
            if config.stop:
                body["stop"] = list(config.stop)
            body.update(self.extra_body)
            return self.endpoint.apost(client, "completions", body, lambda data: self._parse_text(data, config))

        return await self._gather(len(prompts), config, one, progress)

    def close(self) -> None:
        """Nothing to release: each call opens and closes its own connection pool."""

    async def _gather(self, n: int, config: GenerationConfig, one: Callable[[Any, int], Awaitable[T]],
                      progress: ProgressFn | None) -> list[T]:
        width = min(self.max_concurrency, config.batch_size)
        limit = asyncio.Semaphore(width)

        async def run(client: Any, row: int) -> T:
            async with limit:
                out = await one(client, row)
            if progress:
                progress(1)
            return out

        async with self.endpoint.async_client(width) as client:
            tasks = [asyncio.ensure_future(run(client, i)) for i in range(n)]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:
                # One row failed for good: stop the others instead of leaving them running.
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise

    # -- one request, with retries ------------------------------------------------------------

    async def _request(self, client: Any, row: int, messages: list[dict[str, str]], prefix: str,
                        config: GenerationConfig, hook: TokenHook | None) -> Completion:
        body = self._body(row, messages, prefix, config, stream=hook is not None)
        if hook is None:
            return await self.endpoint.apost(client, "chat/completions", body, lambda data: self._parse(data, config))
        url = self.endpoint.url("chat/completions")
        shown = [False]  # set once the hook has seen text: such a stream is not retried

        async def once() -> Completion:
            import httpx

            try:
                return await self._stream(client, url, body, row, config, hook, shown)
            except (httpx.TransportError, Retryable) as e:
                if shown[0]:
                    raise EndpointError(
                        f"POST {url}: the stream broke after the token hook had seen part of the answer "
                        f"({type(e).__name__}: {e or 'no detail'}); not retried, a retry would show the hook "
                        "the same tokens again", url=self.base_url) from e
                raise

        return await self.endpoint.acall(url, once)

    def _body(self, row: int, messages: list[dict[str, str]], prefix: str,
              config: GenerationConfig, *, stream: bool) -> dict[str, Any]:
        msgs = list(messages)
        if prefix:
            msgs.append({"role": "assistant", "content": prefix})
        body: dict[str, Any] = {
            "model": self.model, "messages": msgs,
            "max_tokens": config.max_new_tokens, "temperature": config.temperature,
        }
        if not config.greedy:
            body["top_p"] = config.top_p
        if config.seed is not None:
            body["seed"] = config.seed + row
        if config.stop:
            body["stop"] = list(config.stop)
        if config.logprobs:
            body["logprobs"] = True
        if stream:
            body["stream"] = True
            if self.prefix_style == "vllm":
                # without it a stream carries no usage block: prompt and completion token counts are lost
                body["stream_options"] = {"include_usage": True}
        if prefix and self.prefix_style == "vllm":
            body.update(continue_final_message=True, add_generation_prompt=False)
        body.update(self.extra_body)
        return body

    # -- responses ----------------------------------------------------------------------------

    def _parse(self, data: dict[str, Any], config: GenerationConfig) -> Completion:
        choice = chat_choice(data)
        text = choice["message"].get("content") or ""
        logps = _logprobs(choice.get("logprobs")) if config.logprobs else None
        usage = data.get("usage") or {}
        return _finish(text, choice.get("finish_reason"), config, logps,
                       usage.get("prompt_tokens"), usage.get("completion_tokens"))

    def _parse_text(self, data: dict[str, Any], config: GenerationConfig) -> Completion:
        choice = completion_choice(data)
        usage = data.get("usage") or {}
        return _finish(choice.get("text") or "", choice.get("finish_reason"), config, None,
                       usage.get("prompt_tokens"), usage.get("completion_tokens"))

    async def _stream(self, client: Any, url: str, body: dict[str, Any], row: int,
                      config: GenerationConfig, hook: TokenHook, shown: list[bool]) -> Completion:
        parts: list[str] = []
        logps: list[float] = []
        reason: str | None = None
        usage: dict[str, Any] = {}
        async with client.stream("POST", url, json=body) as resp:
            if resp.status_code >= 300:
                await resp.aread()
                check_status(resp, url, self.base_url)
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators, comments, event names
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                try:
                    chunk = json.loads(payload)
                except json.JSONDecodeError:
                    if shown[0]:
                        raise BackendError(f"POST {url}: malformed stream chunk {payload[:200]!r}") from None
                    raise Retryable(f"malformed stream chunk {payload[:200]!r}") from None
                if "error" in chunk:
                    raise BackendError(f"POST {url}: server error mid-stream: {error_text(chunk)}")
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    reason = choice.get("finish_reason") or reason
                    logps.extend(_logprobs(choice.get("logprobs")) or [])
                    piece = (choice.get("delta") or {}).get("content") or ""
                    if not piece:
                        continue
                    parts.append(piece)
                    shown[0] = True
                    if hook(TokenEvent(row=row, token_id=None, piece=piece)):
                        # Leaving the context manager closes the connection: the server stops.
                        return Completion(text="".join(parts), finish_reason="hook",
                                          logprobs=logps if config.logprobs else None,
                                          completion_tokens=len(logps) or None, raw_text="".join(parts))
        return _finish("".join(parts), reason, config, logps if config.logprobs else None,
                       usage.get("prompt_tokens"), usage.get("completion_tokens"))


def _run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from synchronous code, even inside a running event loop."""

    def run() -> T:
        return asyncio.run(make())  # type: ignore[arg-type]

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run()
    # Inside a running loop (notebook, async server) asyncio.run is not allowed and blocking
    # the loop on itself would deadlock: run a private loop in a worker thread instead.
    # Hooks and progress callbacks are then called from that thread.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="safethink-http") as pool:
        return pool.submit(run).result()


def _finish(text: str, reason: str | None, config: GenerationConfig, logps: list[float] | None,
            prompt_tokens: int | None, completion_tokens: int | None) -> Completion:
    # Servers apply stop strings themselves; cutting again is cheap insurance for those that don't.
    hit = False
    for s in config.stop:
        k = text.find(s)
        if k >= 0:
            text, hit = text[:k], True
    finish = "length" if reason == "length" and not hit else "stop"
    return Completion(text=text, finish_reason=finish, logprobs=logps, prompt_tokens=prompt_tokens,
                      completion_tokens=completion_tokens, raw_text=text)


def _logprobs(block: Any) -> list[float] | None:
    """Chat-completions logprobs: ``{"content": [{"token", "logprob", ...}, ...]}``."""
    if not isinstance(block, dict) or not isinstance(block.get("content"), list):
        return None
    return [float(t["logprob"]) for t in block["content"] if isinstance(t, dict) and "logprob" in t]
