"""Run the ingress under uvicorn (uvloop event loop, httptools parser guarded by
:mod:`ingress.connection_guard`, access log off), its shutdown bounded by :mod:`ingress.shutdown`."""

from __future__ import annotations

import contextlib
import math
import signal
import socket
from collections.abc import Generator
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from ingress.app import create_app
from ingress.connection_guard import guarded_protocol
from ingress.shutdown import CANCEL_AFTER, ShutdownGrace
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
    shutdown: ShutdownGrace | None = None,
) -> uvicorn.Config:
    """``own_logging``: uvicorn configures its loggers; False leaves them to the caller's configuration.
    ``tracer``: OpenTelemetry traces of completions, or None.  ``shutdown``: the grace of an
    :class:`IngressServer`; None (a plain ``uvicorn.Server``) waits for open responses without a bound."""
    return uvicorn.Config(
        create_app(settings, tracer=tracer, shutdown=shutdown),
        host=host,
        port=port,
        loop="uvloop",
        http=guarded_protocol(settings.connections, settings.default_api_version),
        timeout_keep_alive=settings.connections.keepalive_timeout,
        timeout_graceful_shutdown=None if shutdown is None else math.ceil(shutdown.grace + CANCEL_AFTER),
        ws="none",
        lifespan="on",
        access_log=access_log,
        server_header=False,
        log_config=uvicorn.config.LOGGING_CONFIG if own_logging else None,
    )


class IngressServer(uvicorn.Server):
    """uvicorn's server that starts the app's :class:`ShutdownGrace` as it stops listening, and ends it
    at a second SIGTERM or SIGINT (uvicorn alone ignores a second SIGTERM, and exits at a second SIGINT
    without ending its open streams: a third SIGINT still does that)."""

    def __init__(self, config: uvicorn.Config, shutdown_grace: ShutdownGrace) -> None:
        super().__init__(config)
        self.shutdown_grace = shutdown_grace

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.shutdown_grace.begin()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """uvicorn's, except that a graceful stop by SIGTERM ends :meth:`run` normally instead of raising
        the signal again once the server is down: the process then exits 0 after its own clean-up (the
        tracer's last spans sent), as a worker does.  SIGINT is raised again (KeyboardInterrupt: the
        clean-up runs, the status is 130), and so is everything after a forced exit (a third SIGINT)."""
        with super().capture_signals():
            yield
            if not self.force_exit:
                self._captured_signals[:] = [s for s in self._captured_signals if s != signal.SIGTERM]

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and not self.shutdown_grace.hurried:
            self.shutdown_grace.hurry()
            return
        super().handle_exit(sig, frame)


def run(
    settings: Settings,
    *,
    host: str,
    port: int,
    own_logging: bool = True,
    tracer: RequestTracer | None = None,
) -> None:
    """Serve until interrupted (blocking); on SIGTERM, end within ``ingress_shutdown_grace`` plus a few
    seconds (:mod:`ingress.shutdown`)."""
    shutdown = ShutdownGrace(settings.ingress_shutdown_grace)
    config = uvicorn_config(
        settings, host=host, port=port, own_logging=own_logging, tracer=tracer, shutdown=shutdown
    )
    IngressServer(config, shutdown).run()
