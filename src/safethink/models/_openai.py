"""OpenAI-compatible HTTP backend: any ``/v1/chat/completions`` server (vLLM, TGI, llama.cpp
server, OpenAI, ``safethink serve``).

The core is async (:meth:`OpenAIChatModel.agenerate`): one httpx client per call, at most
``max_concurrency`` requests in flight, retries with exponential backoff and jitter on 429, 408,
5xx, timeouts and connection errors (honouring ``Retry-After``), and a :class:`BackendError`
naming the status and the server's message for any other 4xx. Failures of the endpoint as a
whole (retries exhausted, HTTP 401/403/404, a reply that is not the API) raise its subclass
:class:`EndpointError`; a plain :class:`BackendError` is about the one request. :meth:`generate`
is the synchronous :class:`ChatModel` entry point; it also works when called from inside a running
event loop (it then runs its own loop in a worker thread).

With a token hook the request is streamed and the hook sees every text delta
(``TokenEvent.token_id`` is None: the server sends text, not ids); a hook that returns True closes
the stream, which makes vLLM abort the request server-side.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import json
import logging
import os
import random
import time
from collections.abc import Sequence
from typing import Any, Literal

from ..errors import BackendError, ENDPOINT_HTTP_STATUS, EndpointError, SpecError
from ._chat import validate_messages
from ._types import Completion, Conversation, GenerationConfig, ProgressFn, TokenEvent, TokenHook

log = logging.getLogger(__name__)

PrefixStyle = Literal["vllm", "plain"]
API_KEY_ENV = ("SAFETHINK_API_KEY", "OPENAI_API_KEY")


class _Retryable(Exception):
    """A failure worth retrying (429 / 408 / 5xx / timeout / connection error)."""

    def __init__(self, what: str, retry_after: float | None = None):
        super().__init__(what)
        self.retry_after = retry_after


class OpenAIChatModel:
    """A model behind an OpenAI-compatible chat completions endpoint.

    Prefixes (prefilled assistant text) are sent as a final assistant message. With
    ``prefix_style="vllm"`` (the default) the request also carries vLLM's
    ``continue_final_message=True, add_generation_prompt=False`` so the server continues that
    message instead of starting a new turn; use ``"plain"`` for servers that reject unknown
    fields (OpenAI itself), which may or may not continue the message.
    """

    hook_mode: Literal["live", "post-hoc"] = "live"

    def __init__(
        self,
        model: str,
        base_url: str,
        spec: str | None = None,
        *,
        api_key: str | None = None,
        max_concurrency: int = 8,
        timeout_s: float = 60.0,
        max_retries: int = 5,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
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
            timeout_s: connect / read / write timeout of one attempt, in seconds.
            max_retries: retries after the first attempt for retryable failures.
            backoff_base_s: first backoff delay; doubles each retry, with jitter.
            backoff_cap_s: the longest wait between attempts (also caps ``Retry-After``).
            extra_body: fields merged into every request body last (server-specific options,
                e.g. ``{"skip_special_tokens": False}`` for vLLM to keep R2D pivot tokens).
            prefix_style: how prefixes are requested (see the class docstring).
        """
        if not base_url.startswith(("http://", "https://")):
            raise SpecError(f"base_url {base_url!r}: expected http(s)://host:port/v1")
        if max_concurrency < 1 or max_retries < 0 or timeout_s <= 0:
            raise ValueError("need max_concurrency >= 1, max_retries >= 0, timeout_s > 0")
        if backoff_base_s < 0 or backoff_cap_s < 0:
            raise ValueError("backoff delays must be >= 0")
        if prefix_style not in ("vllm", "plain"):
            raise ValueError(f"prefix_style {prefix_style!r}: expected 'vllm' or 'plain'")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.spec = spec or f"openai:{model}@{self.base_url}"
        self._api_key = api_key or next((os.environ[k] for k in API_KEY_ENV if os.environ.get(k)), None)
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.extra_body = dict(extra_body or {})
        self.prefix_style = prefix_style
        self._rng = random.Random()  # private: jitter must not disturb the caller's global seed

    def __repr__(self) -> str:  # never shows the API key
        return f"OpenAIChatModel(model={self.model!r}, base_url={self.base_url!r})"

    # -- public API ---------------------------------------------------------------------------

    def generate(
        self,
        conversations: Sequence[Conversation],
        config: GenerationConfig = GenerationConfig(),
        *,
        prefixes: Sequence[str] | None = None,
        hook: TokenHook | None = None,
        progress: ProgressFn | None = None,
    ) -> list[Completion]:
        """Synchronous :class:`ChatModel` entry point (see :meth:`agenerate`)."""

        def run() -> list[Completion]:
            return asyncio.run(self.agenerate(conversations, config, prefixes=prefixes,
                                              hook=hook, progress=progress))

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return run()
        # Inside a running loop (notebook, async server) asyncio.run is not allowed and blocking
        # the loop on itself would deadlock: run a private loop in a worker thread instead.
        # The hook and progress callbacks are then called from that thread.
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="safethink-http") as pool:
            return pool.submit(run).result()

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
        import httpx

        convs = [validate_messages(list(c), where=f"conversations[{i}]") for i, c in enumerate(conversations)]
        if prefixes is not None and len(prefixes) != len(convs):
            raise ValueError("prefixes must have one entry per conversation")
        width = min(self.max_concurrency, config.batch_size)
        limit = asyncio.Semaphore(width)
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout_s),
            limits=httpx.Limits(max_connections=width, max_keepalive_connections=width),
            headers=headers,
        )

        async def one(row: int) -> Completion:
            async with limit:
                out = await self._complete(client, row, convs[row],
                                           prefixes[row] if prefixes else "", config, hook)
            if progress:
                progress(1)
            return out

        async with client:
            tasks = [asyncio.ensure_future(one(i)) for i in range(len(convs))]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:
                # One row failed for good: stop the others instead of leaving them running.
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise

    def close(self) -> None:
        """Nothing to release: each call opens and closes its own connection pool."""

    # -- one request, with retries ------------------------------------------------------------

    async def _complete(self, client: Any, row: int, messages: list[dict[str, str]], prefix: str,
                        config: GenerationConfig, hook: TokenHook | None) -> Completion:
        import httpx

        body = self._body(row, messages, prefix, config, stream=hook is not None)
        url = f"{self.base_url}/chat/completions"
        attempt = 0
        while True:
            shown = [False]  # set once the hook has seen text: such a stream is not retried
            try:
                if hook is None:
                    resp = await client.post(url, json=body)
                    _check_status(resp, url)
                    return self._parse(_json(resp, url), config)
                return await self._stream(client, url, body, row, config, hook, shown)
            except httpx.TransportError as e:  # timeouts, refused / reset connections
                failure = _Retryable(f"{type(e).__name__}: {e or 'no detail'}")
                if shown[0]:
                    raise EndpointError(
                        f"POST {url}: the stream broke after the token hook had seen part of the "
                        f"answer ({failure}); not retried, a retry would show the hook the same "
                        "tokens again", url=self.base_url) from e
            except _Retryable as e:
                failure = e
            if attempt >= self.max_retries:
                raise EndpointError(f"POST {url}: gave up after {attempt + 1} attempts; last error: {failure}",
                                    url=self.base_url)
            delay = self._delay(attempt, failure.retry_after)
            log.warning("POST %s failed (%s); retry %d/%d in %.2fs", url, failure, attempt + 1,
                        self.max_retries, delay)
            await asyncio.sleep(delay)
            attempt += 1

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:  # the server knows best, within our cap
            return min(max(retry_after, 0.0), self.backoff_cap_s)
        d = min(self.backoff_cap_s, self.backoff_base_s * 2 ** attempt)
        # Jitter: clients that failed together should not all come back at the same instant.
        return d / 2 + self._rng.uniform(0, d / 2)

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
        if prefix and self.prefix_style == "vllm":
            body.update(continue_final_message=True, add_generation_prompt=False)
        body.update(self.extra_body)
        return body

    # -- responses ----------------------------------------------------------------------------

    def _parse(self, data: dict[str, Any], config: GenerationConfig) -> Completion:
        try:
            choice = data["choices"][0]
            text = (choice.get("message") or {}).get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise EndpointError(f"unexpected response from {self.base_url}: no choices[0].message "
                                f"in {json.dumps(data)[:300]}", url=self.base_url) from None
        logps = _logprobs(choice.get("logprobs")) if config.logprobs else None
        usage = data.get("usage") or {}
        return _finish(text, choice.get("finish_reason"), config, logps,
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
                _check_status(resp, url)
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators, comments, event names
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                try:
                    chunk = json.loads(payload)
                except json.JSONDecodeError:
                    raise BackendError(f"POST {url}: malformed stream chunk {payload[:200]!r}") from None
                if "error" in chunk:
                    raise BackendError(f"POST {url}: server error mid-stream: {_error_text(chunk)}")
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


def _json(resp: Any, url: str) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError:
        raise EndpointError(f"POST {url}: response is not JSON: {resp.text[:300]!r}", url=_root(url)) from None
    if not isinstance(data, dict):
        raise EndpointError(f"POST {url}: expected a JSON object, got {type(data).__name__}", url=_root(url))
    return data


def _check_status(resp: Any, url: str) -> None:
    code = resp.status_code
    if code < 300:
        return
    message = _error_text(_maybe_json(resp)) or resp.text[:500].strip() or resp.reason_phrase
    if code in (408, 429) or code >= 500:
        raise _Retryable(f"HTTP {code}: {message}", retry_after=retry_after_s(resp.headers))
    hint = {
        401: " (set SAFETHINK_API_KEY or OPENAI_API_KEY, or pass api_key=)",
        404: " (check the model name and that the base URL ends in /v1)",
    }.get(code, "")
    text = f"POST {url}: HTTP {code} {resp.reason_phrase}: {message}{hint}"
    if code in ENDPOINT_HTTP_STATUS:
        raise EndpointError(text, url=_root(url))
    raise BackendError(text)




def _root(url: str) -> str:
    """The API root of a ``.../chat/completions`` URL."""
    return url.removesuffix("/chat/completions")


def _maybe_json(resp: Any) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def _error_text(data: Any) -> str:
    """The human message in the error shapes servers use (OpenAI, vLLM, FastAPI, TGI)."""
    if not isinstance(data, dict):
        return ""
    err = data.get("error")
    if isinstance(err, dict) and err.get("message"):
        return str(err["message"])
    for key in ("message", "detail"):
        if data.get(key):
            return str(data[key]) if not isinstance(data[key], str) else data[key]
    return str(err) if err else ""


def retry_after_s(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` (OpenAI) or ``Retry-After`` (seconds or HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
