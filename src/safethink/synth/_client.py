"""A small client for OpenAI-compatible chat endpoints that returns *validated* JSON.

Transport failures (connection errors, HTTP 429/5xx) are retried with backoff; a reply that is
not valid JSON for the expected schema is sent back to the model with the validation error and a
request to fix it ("repair"), a bounded number of times.

Two failure kinds reach the caller: :class:`~safethink.errors.EndpointError` when the endpoint
itself is down or unusable (retries exhausted, HTTP 401/403/404, a reply that is not a chat
completion), and :class:`StructuredOutputError` when the model answered but never validly (a
verdict on that request). Any other HTTP 4xx is a plain :class:`BackendError`: the server rejected
that one request.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ..errors import BackendError, ENDPOINT_HTTP_STATUS, EndpointError

M = TypeVar("M", bound=BaseModel)


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


class StructuredOutputError(BackendError):
    """The model did not produce valid output within the allowed repairs."""


def extract_json(text: str) -> Any:
    """Parse the JSON object in a reply, tolerating code fences and prose around it."""
    m = _FENCE.search(text)
    if m:
        text = m.group(1)
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("no JSON object found in the reply")
    return json.loads(text[start:end + 1])


class ChatClient:
    """Synchronous, thread-safe chat-completions client (one ``httpx.Client`` shared by threads)."""

    def __init__(self, model: str, base_url: str, *, api_key: str | None = None, timeout: float = 120.0,
                 max_retries: int = 3, backoff: float = 0.5, temperature: float = 0.0, max_tokens: int = 1024,
                 json_mode: bool = True):
        import httpx

        self.model = model
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.backoff = backoff
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.json_mode = json_mode
        key = api_key or os.environ.get("SAFETHINK_TEACHER_API_KEY") or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(timeout=timeout, headers=headers)

    def complete(self, messages: list[dict[str, str]]) -> str:
        """The assistant text of one chat completion."""
        import httpx

        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": self.temperature,
                                "max_tokens": self.max_tokens}
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        url = f"{self.base_url}/chat/completions"
        last = ""
        for attempt in range(self.max_retries + 1):
            try:
                r = self._http.post(url, json=body)
            except httpx.HTTPError as e:
                last = f"{type(e).__name__}: {e}"
            else:
                if r.status_code == 200:
                    try:
                        return r.json()["choices"][0]["message"]["content"] or ""
                    except (ValueError, KeyError, IndexError, TypeError):
                        raise EndpointError(f"{url}: reply is not a chat completion: {r.text[:200]}",
                                            url=self.base_url) from None
                if r.status_code == 400 and self.json_mode and "response_format" in r.text:
                    self.json_mode = False  # the server does not know JSON mode; ask in the prompt only
                    body.pop("response_format", None)
                    continue
                if r.status_code in ENDPOINT_HTTP_STATUS:
                    raise EndpointError(f"{url}: HTTP {r.status_code}: {r.text[:300]}", url=self.base_url)
                if r.status_code not in (408, 409, 429) and r.status_code < 500:
                    raise BackendError(f"{url}: HTTP {r.status_code}: {r.text[:300]}")
                last = f"HTTP {r.status_code}"
            if attempt < self.max_retries:
                time.sleep(self.backoff * 2 ** attempt)
        raise EndpointError(f"{url}: failed after {self.max_retries + 1} attempts ({last})", url=self.base_url)

    def structured(self, messages: list[dict[str, str]], schema: type[M], *,
                   check: Callable[[M], None] | None = None, max_repairs: int = 2) -> tuple[M, int]:
        """(validated object, number of repairs it took). ``check`` raises ValueError for
        domain errors (e.g. a missing policy category), which are repaired like schema errors."""
        convo = list(messages)
        for attempt in range(max_repairs + 1):
            reply = self.complete(convo)
            try:
                obj = schema.model_validate(extract_json(reply))
                if check is not None:
                    check(obj)
                return obj, attempt
            except (ValueError, ValidationError) as e:  # json errors are ValueErrors too
                problem = _describe(e)
            convo = [*convo, {"role": "assistant", "content": reply},
                     {"role": "user", "content": f"Your reply was not valid: {problem}. Reply again with only "
                                                 "the corrected JSON object, nothing else."}]
        raise StructuredOutputError(f"{self.model}: no valid output after {max_repairs} repairs (last: {problem})")

    def close(self) -> None:
        self._http.close()


def _describe(e: Exception) -> str:
    if isinstance(e, ValidationError):
        return "; ".join(f"{'.'.join(map(str, x['loc'])) or 'object'}: {x['msg']}" for x in e.errors()[:5])
    return str(e)
