"""Errors safethink raises for bad input; the CLI prints them as one line and exits non-zero."""

from __future__ import annotations


class SafethinkError(Exception):
    """Base class: a problem the user can fix (bad spec, missing file, malformed input)."""


class SpecError(SafethinkError, ValueError):
    """A model / attack / judge spec string that cannot be parsed or resolved."""


class InputError(SafethinkError, ValueError):
    """Malformed user input; the message names the file, line and what was expected."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}"
            if line is not None:
                where += f":{line}"
            where += ": "
        super().__init__(where + message)
        self.path = path
        self.line = line


class MissingExtraError(SafethinkError, ImportError):
    """An optional dependency is not installed; the message names the pip extra."""

    def __init__(self, package: str, extra: str, what: str):
        super().__init__(
            f"{what} needs the '{package}' package: pip install 'safethink[{extra}]'"
        )


class BackendError(SafethinkError, RuntimeError):
    """A model backend failed in a way retries cannot fix (for example an HTTP 4xx)."""


class EndpointError(BackendError):
    """An HTTP endpoint failed as a whole, not on one request: it could not be reached, timed out or
    kept answering 408 / 409 / 429 / 5xx through every retry, rejected the client itself (HTTP 401,
    403, 404: key, model name or URL), or answered with something that is not the API. The same
    request can succeed once the endpoint is back or fixed, so callers must not record the failure
    as a verdict on the request (a skipped item, a fallback answer)."""

    def __init__(self, message: str, *, url: str):
        super().__init__(message)
        self.url = url
        """The endpoint (the API root, e.g. ``http://127.0.0.1:8000/v1``)."""


ENDPOINT_HTTP_STATUS = (401, 403, 404)
"""HTTP client errors about the endpoint (key, permissions, URL or model name), not about the request:
the HTTP clients raise :class:`EndpointError` for them."""
