"""How a provider adapter reaches its upstream: the one interface both HTTP clients offer, and the choice
between them per provider (``http_client`` in ``[providers.NAME]``).

    fast   workers.providers.upstream_http: HTTP/1.1 on asyncio + httptools, the default (cheapest per call)
    httpx  workers.providers.httpx_client: proxies (``proxy``, ``HTTPS_PROXY``/``NO_PROXY``), HTTP/2,
           compressed bodies; for an upstream behind an egress proxy or one that needs them

Both take a custom CA bundle (``ca_file``) and a client certificate for mutual TLS (``client_cert``,
``client_key``), raise :mod:`~workers.providers.upstream_http`'s transport errors, and never send a request
twice on their own.
"""

from __future__ import annotations

import logging
import ssl
import urllib.request
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Protocol
from urllib.parse import urlsplit

from shared.errors import ConfigError
from shared.settings import ProviderSettings

log = logging.getLogger(__name__)


class UpstreamReply(Protocol):
    """The response to one call: status and headers, then the whole body or its server-sent events."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]:  # looked up case-insensitively
        ...

    async def read(self) -> bytes: ...

    def sse_data(self) -> AsyncIterator[bytes]: ...


class UpstreamHttp(Protocol):
    """``async with client.post(path, body) as reply:`` against one provider's base URL."""

    def post(self, path: str, body: bytes) -> AbstractAsyncContextManager[UpstreamReply]: ...

    async def aclose(self) -> None: ...


def make_http_client(provider: ProviderSettings, headers: Mapping[str, str]) -> UpstreamHttp:
    """The provider's HTTP client, per its ``http_client`` setting; one per provider and process."""
    tls = tls_context(provider)
    if provider.http_client == "httpx":
        from workers.providers.httpx_client import HttpxUpstreamClient

        return HttpxUpstreamClient(provider, headers, tls)
    from workers.providers.upstream_http import UpstreamClient

    _warn_about_ignored_proxy(provider)
    return UpstreamClient(
        provider.base_url,
        headers,
        max_connections=provider.concurrency,
        connect_timeout=provider.timeouts.connect,
        ssl_context=tls,
    )


def tls_context(provider: ProviderSettings) -> ssl.SSLContext | None:
    """The provider's TLS settings as a context (None: the client's default trust, no client certificate)."""
    if not (provider.ca_file or provider.client_cert):
        return None
    try:
        context = ssl.create_default_context(cafile=provider.ca_file or None)
        if not provider.ca_file:
            _trust_certifi(context)
        if provider.client_cert:
            context.load_cert_chain(provider.client_cert, provider.client_key or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"provider {provider.name!r}: cannot load its TLS files: {exc}") from exc
    if provider.http_client == "fast":
        context.set_alpn_protocols(["http/1.1"])
    return context


def _trust_certifi(context: ssl.SSLContext) -> None:
    import certifi

    context.load_verify_locations(certifi.where())


def _warn_about_ignored_proxy(provider: ProviderSettings) -> None:
    """The fast client does not use proxies: say so once if the environment asks for one for this host."""
    host = urlsplit(provider.base_url).hostname or ""
    scheme = urlsplit(provider.base_url).scheme
    proxies = urllib.request.getproxies()
    if proxies.get(scheme) and not urllib.request.proxy_bypass(host):
        log.warning(
            'provider %r: %s_PROXY is set but http_client = "fast" does not use proxies; '
            'set http_client = "httpx" to reach %s through it',
            provider.name,
            scheme.upper(),
            host,
        )
