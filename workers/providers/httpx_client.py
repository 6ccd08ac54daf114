"""The httpx-based upstream client, for a provider that needs what the fast one does not do: an HTTP(S)
proxy (``proxy``, or ``HTTPS_PROXY``/``NO_PROXY`` from the environment), HTTP/2, compressed bodies.

Same interface and errors as :class:`~workers.providers.upstream_http.UpstreamClient`: httpx's exceptions
become ours where they enter.  httpx's own timeouts cover connecting and waiting for a pooled
connection; reading is bounded by the adapter's deadlines, as with the fast client.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType

import httpx

from shared.errors import ConfigError
from shared.settings import ProviderSettings
from workers.providers.sse import EventTooLarge, SSEDecoder
from workers.providers.upstream_http import (
    MAX_BODY_BYTES,
    USER_AGENT,
    ConnectError,
    ConnectionCut,
    ConnectTimeout,
    ResponseTooLarge,
)


@contextmanager
def _converted() -> Iterator[None]:
    """httpx's errors as the fast client's: the adapters and upstream_call know only those."""
    try:
        yield
    except httpx.ConnectTimeout as exc:
        raise ConnectTimeout(str(exc) or "connecting timed out") from exc
    except (httpx.ConnectError, httpx.ProxyError, httpx.PoolTimeout, httpx.UnsupportedProtocol) as exc:
        raise ConnectError(str(exc) or type(exc).__name__) from exc
    except httpx.TransportError as exc:  # read/write errors, protocol errors, a closed connection
        raise ConnectionCut(str(exc) or type(exc).__name__) from exc
    except httpx.DecodingError as exc:
        raise ConnectionCut(f"the upstream's body could not be decoded: {exc}") from exc


class HttpxReply:
    """An httpx streaming response behind the :class:`~workers.providers.http_clients.UpstreamReply` API."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers

    async def read(self) -> bytes:
        """The whole body, up to ``MAX_BODY_BYTES`` as with the fast client (ResponseTooLarge beyond)."""
        pieces: list[bytes] = []
        size = 0
        with _converted():
            async for piece in self._response.aiter_bytes():
                size += len(piece)
                if size > MAX_BODY_BYTES:
                    raise ResponseTooLarge(f"the upstream's body is longer than {MAX_BODY_BYTES} bytes")
                pieces.append(piece)
        return b"".join(pieces)

    async def sse_data(self) -> AsyncIterator[bytes]:
        decoder = SSEDecoder()
        with _converted():
            async for piece in self._response.aiter_bytes():
                try:
                    events = decoder.feed(piece)
                except EventTooLarge as exc:
                    raise ResponseTooLarge(f"the upstream's stream: {exc}") from None
                for data in events:
                    yield data
        for data in decoder.end():
            yield data


class _HttpxCall:
    __slots__ = ("_client", "_request", "_response")

    def __init__(self, client: httpx.AsyncClient, request: httpx.Request) -> None:
        self._client = client
        self._request = request
        self._response: httpx.Response | None = None

    async def __aenter__(self) -> HttpxReply:
        with _converted():
            self._response = await self._client.send(self._request, stream=True)
        return HttpxReply(self._response)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._response is not None:
            await self._response.aclose()  # an unread body closes the connection: the upstream sees us go


class HttpxUpstreamClient:
    """``POST``s to one provider's base URL through httpx; one per provider and process."""

    def __init__(
        self, provider: ProviderSettings, headers: Mapping[str, str], tls: ssl.SSLContext | None
    ) -> None:
        if not provider.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"upstream base_url {provider.base_url!r} is not an http:// or https:// URL")
        self._base = provider.base_url.rstrip("/")
        connect = provider.timeouts.connect
        self._client = httpx.AsyncClient(
            headers={"user-agent": USER_AGENT, **headers},
            timeout=httpx.Timeout(connect=connect, pool=connect, read=None, write=None),
            limits=httpx.Limits(max_connections=provider.concurrency),
            verify=tls if tls is not None else True,
            http2=provider.http2,
            proxy=provider.proxy or None,
            trust_env=True,  # HTTP(S)_PROXY, NO_PROXY, SSL_CERT_FILE
        )

    def post(self, path: str, body: bytes) -> _HttpxCall:
        request = self._client.build_request("POST", f"{self._base}/{path.lstrip('/')}", content=body)
        return _HttpxCall(self._client, request)

    async def aclose(self) -> None:
        await self._client.aclose()
