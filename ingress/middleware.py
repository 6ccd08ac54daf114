"""Pure ASGI middleware giving every response its ``X-Request-Id`` and ``API-Version`` headers.

(Starlette's ``BaseHTTPMiddleware`` would buffer streams and hide client disconnects.)  It also
resolves the request's API version (:mod:`ingress.versions`), stores ``request_id`` and
``api_version`` in ``scope["state"]``, refuses a compressed body on every route (400
``unsupported_content_encoding``, :func:`~ingress.request_body.check_body_coding`), and turns any
unexpected exception into a 500 ``api_error`` envelope, logging the traceback (a client that left while
its body was read is no error: nothing is answered or logged above DEBUG).  A request the server
cancels before its answer (uvicorn's last step of a shutdown, ``timeout_graceful_shutdown`` after the
grace: :mod:`ingress.shutdown`) gets the shutdown's 503 ``ingress_stopping``, not uvicorn's bare 500; an
answer under way is cut as it is.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingress.http_errors import send_error
from ingress.request_body import BODY_CODING_HEADERS, check_body_coding
from ingress.routing import UNAVAILABLE_RETRY_AFTER, retry_after
from ingress.versions import VersionRegistry
from shared.errors import AIORouterError, IngressStopping

log = logging.getLogger(__name__)

_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def request_id_for(client_value: bytes | None) -> bytes:
    """The client's ``X-Request-Id`` if it is a sane token, else a new UUID4."""
    if client_value is not None and _SANE_REQUEST_ID.fullmatch(client_value):
        return client_value
    return str(uuid.uuid4()).encode()


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, versions: VersionRegistry) -> None:
        self.app = app
        self.versions = versions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client_request_id: bytes | None = None
        requested_version: str | None = None
        body_codings: list[tuple[bytes, bytes]] = []
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                client_request_id = value
            elif name == b"api-version":
                requested_version = value.decode("utf-8", "replace")  # shown as sent in an error
            elif name in BODY_CODING_HEADERS:
                body_codings.append((name, value))
        request_id = request_id_for(client_request_id)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id.decode()
        try:
            version = self.versions.resolve(requested_version)
        except AIORouterError as exc:
            await send_error(send, exc, [(b"x-request-id", request_id), *self.versions.default_headers])
            return
        state["api_version"] = version.version
        extra_headers = [(b"x-request-id", request_id), *version.headers]
        try:
            for name, value in body_codings:
                check_body_coding(name, value)
        except AIORouterError as exc:
            await send_error(send, exc, extra_headers)
            return
        response_started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                message["headers"] = [*message.get("headers", ()), *extra_headers]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except asyncio.CancelledError:
            # Cancelled before its answer (uvicorn's last step of a shutdown): the request still ends with
            # an answer the client can act on, and the cancel goes on (uvicorn then closes the
            # connection; an answer under way is cut as it is).
            if not response_started:
                log.warning(
                    "%s %s cancelled before its answer: 503 ingress_stopping",
                    scope.get("method"),
                    scope.get("path"),
                )
                await send_error(
                    send_with_headers, IngressStopping(headers=retry_after(UNAVAILABLE_RETRY_AFTER))
                )
            raise
        except ClientDisconnect:  # the client left (or the connection guard cut its body): no answer to give
            log.debug("client left while %s %s read its body", scope.get("method"), scope.get("path"))
        except Exception:
            log.exception("unexpected error serving %s %s", scope.get("method"), scope.get("path"))
            if not response_started:
                await send_error(send_with_headers, AIORouterError())
