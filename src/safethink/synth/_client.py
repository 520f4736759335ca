"""The teacher's chat client: validated JSON replies from an OpenAI-compatible chat endpoint.

HTTP goes through the shared :class:`~safethink.models._http.Endpoint` (the same client, retries,
``Retry-After`` handling and timeouts as ``openai:`` model specs and the LLM judges). On top of it,
a reply that is not valid JSON for the expected schema is sent back to the model with the
validation error and a request to fix it ("repair"), a bounded number of times.

Two failure kinds reach the caller: :class:`~safethink.errors.EndpointError` when the endpoint
itself is down or unusable (retries exhausted, HTTP 401/403/404), and :class:`StructuredOutputError`
when the model answered but never validly (a verdict on that request). Any other HTTP 4xx is a plain
:class:`BackendError`: the server rejected that one request.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ..errors import BackendError
from ..models._http import Endpoint, RejectedRequest, RetryPolicy, chat_choice

M = TypeVar("M", bound=BaseModel)

API_KEY_ENV = ("SAFETHINK_TEACHER_API_KEY", "OPENAI_API_KEY")
TEACHER_RETRY = RetryPolicy(timeout_s=120.0, max_retries=3)
"""Teacher defaults: long JSON replies take a while on a busy server."""

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

    def __init__(self, model: str, base_url: str, *, api_key: str | None = None, timeout_s: float | None = None,
                 max_retries: int | None = None, backoff_base_s: float | None = None,
                 backoff_cap_s: float | None = None, temperature: float = 0.0, max_tokens: int = 1024,
                 json_mode: bool = True, connections: int = 16):
        """Retry settings left as None come from ``$SAFETHINK_HTTP_<SETTING>``, else
        :data:`TEACHER_RETRY`; the key defaults to ``$SAFETHINK_TEACHER_API_KEY`` then ``$OPENAI_API_KEY``."""
        key = api_key or next((os.environ[k] for k in API_KEY_ENV if os.environ.get(k)), None)
        retry = RetryPolicy.resolve(TEACHER_RETRY, timeout_s=timeout_s, max_retries=max_retries,
                                    backoff_base_s=backoff_base_s, backoff_cap_s=backoff_cap_s)
        self.endpoint = Endpoint(base_url, api_key=key, retry=retry)
        self.model = model
        self.base_url = self.endpoint.base_url
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.json_mode = json_mode
        self._http = self.endpoint.client(connections)

    def complete(self, messages: list[dict[str, str]]) -> str:
        """The assistant text of one chat completion."""
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": self.temperature,
                                "max_tokens": self.max_tokens}
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        try:
            choice = self.endpoint.post(self._http, "chat/completions", body, chat_choice)
        except RejectedRequest as e:
            if not (e.status == 400 and "response_format" in body and "response_format" in e.body):
                raise
            self.json_mode = False  # the server does not know JSON mode; ask in the prompt only
            body.pop("response_format")
            choice = self.endpoint.post(self._http, "chat/completions", body, chat_choice)
        return choice["message"].get("content") or ""

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
