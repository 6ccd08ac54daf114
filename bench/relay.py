"""The peer AIOrouter is measured against in the same run: a minimal Starlette + httpx pass-through relay.

It is the baseline the targets compare against, in one process. ``POST /v1/chat/completions`` sends the
request body unchanged to the upstream through one shared ``httpx.AsyncClient`` and answers with the
upstream's status and bytes: for ``"stream": true`` a ``StreamingResponse`` of the upstream body as it
arrives, otherwise the JSON body whole. No auth, no
validation, no retries, nothing parsed but the ``stream`` flag. So that the peer is not handicapped by
settings AIOrouter does not have, it runs as AIOrouter's ingress does (uvicorn, httptools, uvloop, access
log off) and its connection pool never makes a request wait.

Python API: ``relay = await start_relay(upstream_base_url)`` (``.base_url``, ``await .close()``).
CLI: ``python -m bench.relay --port P --upstream URL`` prints ``listening on <base_url>`` once ready.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from bench.upstream import event_loop_factory

UPSTREAM_TIMEOUT_S = 60.0  # the suite's own request timeout
UNLIMITED = httpx.Limits(max_connections=None, max_keepalive_connections=None)
JSON = {"content-type": "application/json"}


def create_app(upstream_base_url: str) -> Starlette:
    """The relay in front of the OpenAI-style ``upstream_base_url`` (e.g. ``http://host:port/v1``)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
        timeout = httpx.Timeout(UPSTREAM_TIMEOUT_S)
        async with httpx.AsyncClient(base_url=upstream_base_url, timeout=timeout, limits=UNLIMITED) as client:
            yield {"client": client}

    async def chat_completions(request: Request) -> Response:
        client: httpx.AsyncClient = request.state.client
        body = await request.body()
        if orjson.loads(body).get("stream"):
            outgoing = client.build_request("POST", "chat/completions", content=body, headers=JSON)
            upstream = await client.send(outgoing, stream=True)
            return StreamingResponse(
                upstream.aiter_raw(),
                upstream.status_code,
                media_type=upstream.headers.get("content-type"),
                background=BackgroundTask(upstream.aclose),
            )
        answer = await client.post("chat/completions", content=body, headers=JSON)
        return Response(answer.content, answer.status_code, media_type=answer.headers.get("content-type"))

    routes = [Route("/v1/chat/completions", chat_completions, methods=["POST"])]
    return Starlette(routes=routes, lifespan=lifespan)


class Relay:
    """A running relay on this event loop."""

    def __init__(self, server: uvicorn.Server, serving: asyncio.Task[None], host: str, port: int) -> None:
        self._server = server
        self._serving = serving
        self.base_url = f"http://{host}:{port}/v1"

    async def wait_closed(self) -> None:
        await self._serving

    async def close(self) -> None:
        self._server.should_exit = True
        await self._serving


async def start_relay(upstream_base_url: str, host: str = "127.0.0.1", port: int = 0) -> Relay:
    """Listen on ``host:port`` (0: a free port) and relay to ``upstream_base_url`` until ``close()``."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(
        create_app(upstream_base_url),
        http="httptools",
        ws="none",
        lifespan="on",
        access_log=False,
        server_header=False,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            await serving
            raise RuntimeError("the relay stopped while starting")
        await asyncio.sleep(0.01)
    return Relay(server, serving, host, sock.getsockname()[1])


async def _serve(upstream_base_url: str, host: str, port: int) -> None:
    relay = await start_relay(upstream_base_url, host, port)
    print(f"listening on {relay.base_url}", flush=True)
    await relay.wait_closed()  # uvicorn stops on SIGINT/SIGTERM


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on start)")
    parser.add_argument("--upstream", required=True, help="OpenAI-style base URL, e.g. http://host:port/v1")
    args = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(_serve(args.upstream, args.host, args.port))


if __name__ == "__main__":
    main()
