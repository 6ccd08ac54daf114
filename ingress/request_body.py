"""Request bodies read with a bound: past the limit the client gets a 413 before the ingress holds more
than the limit, whatever the body's ``Content-Length`` claims (or if it has none).

:func:`read_body` reads an ASGI request's messages (the chat endpoint, which runs below Starlette's
request object); :func:`request_body` a Starlette request's (the JSON endpoints of the Batch API, the
admin API and the Dashboard).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import Receive

from shared.errors import InvalidRequest, PayloadTooLarge

CONTROL_BODY_LIMIT = 1024 * 1024
"""Bytes the admin API's and the Dashboard's JSON bodies may hold (theirs are a few hundred)."""


async def read_body(receive: Receive, content_length: bytes | None, limit: int) -> bytes | None:
    """The request body, at most ``limit`` bytes (413 beyond); None if the client disconnected."""
    _check_declared(content_length, limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def request_body(request: Request, limit: int) -> bytes:
    """The body of ``request``, at most ``limit`` bytes (413 beyond)."""
    _check_declared(request.headers.get("content-length"), limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def check_json_content_type(value: bytes | str | None) -> None:
    """A JSON body's ``Content-Type`` must say so (parameters such as a charset aside)."""
    raw = value.encode("latin-1") if isinstance(value, str) else (value or b"")
    media_type = raw.split(b";", 1)[0].strip().decode("latin-1").lower()
    if media_type != "application/json":
        shown = media_type or "none"
        raise InvalidRequest(
            f"Content-Type must be application/json (got {shown}).", code="unsupported_content_type"
        )


BODY_CODING_HEADERS = frozenset({b"content-encoding", b"transfer-encoding"})
_READ_AS_SENT = {b"content-encoding": b"identity", b"transfer-encoding": b"chunked"}


def check_body_coding(name: bytes, value: bytes) -> None:
    """A body is read as it comes: a ``Content-Encoding`` other than identity (a compressed body) or a
    ``Transfer-Encoding`` other than chunked would have it parsed as what it is not."""
    codings = [coding.strip().lower() for coding in value.split(b",")]
    if any(coding and coding != _READ_AS_SENT[name] for coding in codings):
        header = "Content-Encoding" if name == b"content-encoding" else "Transfer-Encoding"
        raise InvalidRequest(
            f"Request bodies are read as sent, uncompressed: {header} {value.decode('latin-1')!r} is not "
            "supported.",
            code="unsupported_content_encoding",
            headers={"Accept-Encoding": "identity"},
        )


def _check_declared(content_length: bytes | str | None, limit: int) -> None:
    if content_length is None:
        return
    try:
        declared = int(content_length)
    except ValueError:
        raise InvalidRequest("Invalid Content-Length header.", code="invalid_value") from None
    if declared > limit:
        raise _too_large(limit)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes.")
