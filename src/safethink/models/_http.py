"""The one HTTP client for OpenAI-compatible endpoints (``/chat/completions`` and ``/completions``).

The model backend (``openai:`` specs), the LLM teacher and the LLM judges all send their requests
through an :class:`Endpoint`. Every request is retried, up to ``max_retries`` times, on HTTP 408,
409, 429 and 5xx, on timeouts and connection errors, and on a reply that is not the API (malformed
JSON, no ``choices``): the wait is exponential backoff with full jitter, or what the server's
``Retry-After`` asks (seconds or an HTTP date; OpenAI's ``retry-after-ms``), both capped.

What reaches the caller: :class:`~safethink.errors.EndpointError` when the endpoint failed as a
whole (retries used up; HTTP 401, 403, 404), and :class:`RejectedRequest` (a plain
:class:`~safethink.errors.BackendError`) when the server refused this one request (any other 4xx,
for example a prompt over the context length). Both name the URL and the status.

Timeouts and retries come from :class:`RetryPolicy`; a value the caller leaves unset is read from
the environment (``SAFETHINK_HTTP_TIMEOUT_S``, ``SAFETHINK_HTTP_MAX_RETRIES``,
``SAFETHINK_HTTP_BACKOFF_BASE_S``, ``SAFETHINK_HTTP_BACKOFF_CAP_S``), so command-line runs can be
tuned without a flag on every command.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields, replace
from typing import Any, TypeVar

from ..errors import ENDPOINT_HTTP_STATUS, BackendError, EndpointError, SpecError

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_STATUS = (408, 409, 429)
"""HTTP statuses retried besides every 5xx: request timeout, conflict, rate limit."""

ENV_PREFIX = "SAFETHINK_HTTP_"


@dataclass(frozen=True)
class RetryPolicy:
    """Timeouts and retries of the requests to one endpoint."""

    timeout_s: float = 60.0
    """Connect, read and write timeout of one attempt, in seconds (a stalled reply is cut here)."""
    max_retries: int = 5
    """Retries after the first attempt, for retryable failures."""
    backoff_base_s: float = 0.5
    """First backoff ceiling; it doubles every retry, and the wait is drawn uniformly below it."""
    backoff_cap_s: float = 30.0
    """The longest wait between attempts; also caps what ``Retry-After`` asks for."""

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.max_retries < 0 or self.backoff_base_s < 0 or self.backoff_cap_s < 0:
            raise ValueError("need timeout_s > 0, max_retries >= 0 and backoff delays >= 0")

    @classmethod
    def resolve(cls, defaults: RetryPolicy | None = None, **given: float | int | None) -> RetryPolicy:
        """Each field from ``given`` when not None, else ``$SAFETHINK_HTTP_<FIELD>``, else ``defaults``."""
        base = defaults or cls()
        values: dict[str, Any] = {}
        unknown = set(given) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown retry settings: {', '.join(sorted(unknown))}")
        for f in fields(cls):
            if given.get(f.name) is not None:
                values[f.name] = given[f.name]
                continue
            var = ENV_PREFIX + f.name.upper()
            raw = os.environ.get(var, "").strip()
            if raw:
                kind = int if f.name == "max_retries" else float
                try:
                    values[f.name] = kind(raw)
                except ValueError:
                    raise SpecError(f"${var}={raw!r}: expected a {kind.__name__}") from None
        return replace(base, **values)

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before retry ``attempt + 1``."""
        if retry_after is not None:  # the server knows best, within our cap
            return min(max(retry_after, 0.0), self.backoff_cap_s)
        # Full jitter: clients that failed together spread out over the whole window.
        return rng.uniform(0.0, min(self.backoff_cap_s, self.backoff_base_s * 2 ** attempt))


class Retryable(Exception):
    """A failure worth another attempt (408 / 409 / 429 / 5xx, a reply that is not the API)."""

    def __init__(self, what: str, retry_after: float | None = None):
        super().__init__(what)
        self.retry_after = retry_after


class RejectedRequest(BackendError):
    """The server refused this one request (an HTTP 4xx other than 401 / 403 / 404 / 408 / 409 / 429)."""

    def __init__(self, message: str, *, url: str, status: int, body: str):
        super().__init__(message)
        self.url = url
        self.status = status
        self.body = body


class Endpoint:
    """One OpenAI-compatible API root: its auth header, its retry policy, and the retry loops.

    The httpx clients are the caller's (one per thread pool or event loop): :meth:`client` and
    :meth:`async_client` make them with this endpoint's timeout and headers.
    """

    def __init__(self, base_url: str, *, api_key: str | None = None, retry: RetryPolicy | None = None):
        if not base_url.startswith(("http://", "https://")):
            raise SpecError(f"base_url {base_url!r}: expected http(s)://host:port/v1")
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy.resolve()
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._rng = random.Random()  # private: jitter must not disturb the caller's global seed

    def __repr__(self) -> str:  # never shows the API key
        return f"Endpoint({self.base_url!r}, {self.retry})"

    def url(self, route: str) -> str:
        return f"{self.base_url}/{route.lstrip('/')}"

    def client(self, connections: int = 8) -> Any:
        import httpx

        return httpx.Client(timeout=httpx.Timeout(self.retry.timeout_s), headers=self._headers,
                            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections))

    def async_client(self, connections: int = 8) -> Any:
        import httpx

        return httpx.AsyncClient(timeout=httpx.Timeout(self.retry.timeout_s), headers=self._headers,
                                 limits=httpx.Limits(max_connections=connections,
                                                     max_keepalive_connections=connections))

    # -- one POST, parsed, with retries ---------------------------------------------------------

    def post(self, client: Any, route: str, body: dict[str, Any], parse: Callable[[dict[str, Any]], T]) -> T:
        """POST ``body`` to ``route`` and return ``parse(reply JSON)``; ``parse`` raises ValueError,
        KeyError, IndexError or TypeError for a reply that is not the API (retried)."""
        url = self.url(route)
        return self.call(url, lambda: read_reply(client.post(url, json=body), url, self.base_url, parse))

    async def apost(self, client: Any, route: str, body: dict[str, Any],
                    parse: Callable[[dict[str, Any]], T]) -> T:
        url = self.url(route)

        async def once() -> T:
            return read_reply(await client.post(url, json=body), url, self.base_url, parse)

        return await self.acall(url, once)

    # -- the retry loops -------------------------------------------------------------------------

    def call(self, url: str, once: Callable[[], T]) -> T:
        """``once()`` until it returns, retrying :class:`Retryable` and transport errors."""
        attempt = 0
        while True:
            try:
                return once()
            except Exception as e:  # noqa: BLE001 - _failure re-raises what is not retryable
                failure = self._failure(e)
            time.sleep(self._next(url, attempt, failure))
            attempt += 1

    async def acall(self, url: str, once: Callable[[], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            try:
                return await once()
            except Exception as e:  # noqa: BLE001
                failure = self._failure(e)
            await asyncio.sleep(self._next(url, attempt, failure))
            attempt += 1

    def _failure(self, e: Exception) -> Retryable:
        import httpx

        if isinstance(e, Retryable):
            return e
        if isinstance(e, (httpx.TransportError, httpx.DecodingError)):  # timeouts, refused / reset connections
            return Retryable(f"{type(e).__name__}: {e or 'no detail'}")
        raise e

    def _next(self, url: str, attempt: int, failure: Retryable) -> float:
        if attempt >= self.retry.max_retries:
            raise EndpointError(f"POST {url}: gave up after {attempt + 1} attempts; last error: {failure}",
                                url=self.base_url) from None
        delay = self.retry.delay(attempt, failure.retry_after, self._rng)
        log.info("POST %s failed (%s); retry %d/%d in %.2fs", url, failure, attempt + 1, self.retry.max_retries, delay)
        return delay


# -- replies ------------------------------------------------------------------------------------

def read_reply(resp: Any, url: str, root: str, parse: Callable[[dict[str, Any]], T]) -> T:
    """The parsed JSON of a successful reply; a reply that is not the API is :class:`Retryable`."""
    check_status(resp, url, root)
    try:
        data = json.loads(resp.content)
    except ValueError:  # also bad UTF-8
        raise Retryable(f"reply is not JSON: {resp.content[:200]!r}") from None
    if not isinstance(data, dict):
        raise Retryable(f"reply is a JSON {type(data).__name__}, not an object")
    try:
        return parse(data)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        raise Retryable(f"reply is not the API ({e}): {json.dumps(data)[:300]}") from None


def _first_choice(data: dict[str, Any], field: str, kinds: tuple[type, ...]) -> dict[str, Any]:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ValueError("no choices[0]")
    if not isinstance(choices[0].get(field), kinds):
        raise ValueError(f"no choices[0].{field}")
    return choices[0]


def chat_choice(data: dict[str, Any]) -> dict[str, Any]:
    """``choices[0]`` of a chat completion, checked to carry a ``message``."""
    return _first_choice(data, "message", (dict,))


def completion_choice(data: dict[str, Any]) -> dict[str, Any]:
    """``choices[0]`` of a text completion, checked to carry a ``text``."""
    return _first_choice(data, "text", (str, type(None)))


def check_status(resp: Any, url: str, root: str) -> None:
    """Nothing for 2xx; :class:`Retryable` for 408 / 409 / 429 / 5xx; else the error for the 4xx
    (:class:`EndpointError` about the API root ``root`` for 401 / 403 / 404)."""
    code = resp.status_code
    if code < 300:
        return
    message = error_text(_maybe_json(resp)) or resp.text[:500].strip() or resp.reason_phrase
    if code in RETRY_STATUS or code >= 500:
        raise Retryable(f"HTTP {code}: {message}", retry_after=retry_after_s(resp.headers))
    hint = ""
    if code == 401:
        hint = " (set the API key: SAFETHINK_API_KEY / SAFETHINK_TEACHER_API_KEY or OPENAI_API_KEY)"
    elif code == 404:
        hint = (" (check the model name and that the base URL ends in /v1)" if url.endswith("/chat/completions")
                else " (does the server have a /completions route and this model name?)")
    text = f"POST {url}: HTTP {code} {resp.reason_phrase}: {message}{hint}"
    if code in ENDPOINT_HTTP_STATUS:
        raise EndpointError(text, url=root)
    raise RejectedRequest(text, url=url, status=code, body=resp.text[:2000])


def _maybe_json(resp: Any) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def error_text(data: Any) -> str:
    """The human message in the error shapes servers use (OpenAI, vLLM, FastAPI, TGI)."""
    if not isinstance(data, dict):
        return ""
    err = data.get("error")
    if isinstance(err, dict) and err.get("message"):
        return str(err["message"])
    for key in ("message", "detail"):
        if data.get(key):
            return data[key] if isinstance(data[key], str) else str(data[key])
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
