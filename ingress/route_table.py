"""Routes from a table of ``(path, endpoint, method)`` rows: one Starlette ``Route`` per path.

Starlette answers a method a path does not serve with the 405 of the first route whose path matches,
and its ``Allow`` header lists that route's methods only: with one route per method, ``PUT /v1/files``
would name ``POST`` and not ``GET``.  One route per path, serving each of its methods, makes ``Allow``
name them all (``HEAD`` with ``GET``, as Starlette adds it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

Endpoint = Callable[[Request], Awaitable[Response]]


def route_table(rows: Iterable[tuple[str, Endpoint, str]]) -> list[Route]:
    """One route per path, in the order each path first appears; a path listing a method twice is a
    programming error (``ValueError``)."""
    by_path: dict[str, dict[str, Endpoint]] = {}
    for path, endpoint, method in rows:
        endpoints = by_path.setdefault(path, {})
        if method in endpoints:
            raise ValueError(f"{method} {path} is routed twice")
        endpoints[method] = endpoint
    return [Route(path, _by_method(methods), methods=list(methods)) for path, methods in by_path.items()]


def _by_method(endpoints: dict[str, Endpoint]) -> Endpoint:
    if len(endpoints) == 1:
        (endpoint,) = endpoints.values()
        return endpoint

    async def by_method(request: Request) -> Response:
        # The route lets through only its methods, and HEAD where it serves GET.
        method = "GET" if request.method == "HEAD" and "HEAD" not in endpoints else request.method
        return await endpoints[method](request)

    return by_method
