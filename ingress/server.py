"""Run the ingress under uvicorn (uvloop event loop, httptools parser, access log off)."""

from __future__ import annotations

import uvicorn

from ingress.app import create_app
from shared.settings import Settings


def uvicorn_config(settings: Settings, *, host: str, port: int, access_log: bool = False) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        ws="none",
        lifespan="on",
        access_log=access_log,
        server_header=False,
    )


def run(settings: Settings, *, host: str, port: int) -> None:
    """Serve until interrupted (blocking)."""
    uvicorn.Server(uvicorn_config(settings, host=host, port=port)).run()
