"""Run the ingress under uvicorn (uvloop event loop, httptools parser guarded by
:mod:`ingress.connection_guard`, access log off)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import uvicorn

from ingress.app import create_app
from ingress.connection_guard import guarded_protocol
from shared.settings import Settings

if TYPE_CHECKING:  # imported only when tracing is on: the [otel] extra may not be installed
    from ingress.tracing import RequestTracer


def uvicorn_config(
    settings: Settings,
    *,
    host: str,
    port: int,
    access_log: bool = False,
    own_logging: bool = True,
    tracer: RequestTracer | None = None,
) -> uvicorn.Config:
    """``own_logging``: uvicorn configures its loggers; False leaves them to the caller's configuration.
    ``tracer``: OpenTelemetry traces of completions, or None."""
    return uvicorn.Config(
        create_app(settings, tracer=tracer),
        host=host,
        port=port,
        loop="uvloop",
        http=guarded_protocol(settings.connections, settings.default_api_version),
        timeout_keep_alive=settings.connections.keepalive_timeout,
        ws="none",
        lifespan="on",
        access_log=access_log,
        server_header=False,
        log_config=uvicorn.config.LOGGING_CONFIG if own_logging else None,
    )


def run(
    settings: Settings,
    *,
    host: str,
    port: int,
    own_logging: bool = True,
    tracer: RequestTracer | None = None,
) -> None:
    """Serve until interrupted (blocking)."""
    config = uvicorn_config(settings, host=host, port=port, own_logging=own_logging, tracer=tracer)
    uvicorn.Server(config).run()
