"""Errors a client sees: every one an OpenAI-style JSON body, never an internal exception's text."""

from __future__ import annotations

import uuid

from ._schema import error_body


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
