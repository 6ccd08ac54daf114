"""Errors as HTTP responses: the one exception handler table, and the raw-ASGI error writer.

Every error a client sees is the OpenAI envelope ``{"error": {message, type, param, code}}`` with the
error's status and headers, never a Starlette HTML or text page: routing's 404/405 become
:class:`~shared.errors.NotFound` / :class:`MethodNotAllowed`; anything unexpected becomes a 500
``api_error`` (see :mod:`ingress.middleware`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Send

from ingress.admission import admission_of
from shared.errors import AIORouterError, InvalidRequest, NotFound


class MethodNotAllowed(InvalidRequest):
    """405: the path exists but not with this method (routing only; never published by a worker)."""

    status = 405
    default_code = "method_not_allowed"


class RequestHeadersTooLarge(InvalidRequest):
    """431: a request's line and headers are over the size or count bound (connection level only)."""

    status = 431
    default_code = "request_headers_too_large"


class RequestTimeout(InvalidRequest):
    """408: a request's headers or body did not arrive in time (connection level only)."""

    status = 408
    default_code = "request_timeout"


def error_response(error: AIORouterError) -> Response:
    return Response(
        error.envelope_bytes(), status_code=error.status, headers=error.headers, media_type="application/json"
    )


async def send_error(
    send: Send, error: AIORouterError, extra_headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """Write ``error`` as a whole response on a raw ASGI ``send``."""
    body = error.envelope_bytes()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in error.headers.items()),
        *extra_headers,
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _router_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AIORouterError)
    admission = admission_of(request.scope)
    if admission is not None:  # an authenticated request: its error carries the X-RateLimit-* headers
        await admission.annotate(exc)
    return error_response(exc)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    where = f"{request.method} {request.url.path}"
    error: AIORouterError
    if exc.status_code == 405:
        error = MethodNotAllowed(f"Method not allowed ({where}).", headers=exc.headers)
    elif exc.status_code == 404:
        error = NotFound(f"Invalid URL ({where}).")
    elif exc.status_code >= 500:
        error = AIORouterError()
    else:
        error = InvalidRequest(str(exc.detail))
    return error_response(error)


EXCEPTION_HANDLERS: Mapping[Any, Any] = {
    AIORouterError: _router_error,
    HTTPException: _http_exception,
}
