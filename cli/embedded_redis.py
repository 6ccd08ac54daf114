"""fakeredis's TCP server as the last-resort Redis of ``aiorouter dev`` (needs the ``[dev]`` extra).

Known limits, said out loud by ``aiorouter dev``: data lives in this process' memory only, and fakeredis'
``BLMOVE`` does not block, so idle workers poll it (CPU busy while idle).  Two incompatibilities are
patched here, per connection, without touching fakeredis globally:

- fakeredis reports client addresses as Python tuples, which redis-py's ``CLIENT INFO`` parser (used by
  rq when a worker registers) cannot read: they become ``host:port``;
- fakeredis' TCP server closes the connection after any error reply, where Redis keeps it open (redis-py's
  ``EVALSHA`` → ``NOSCRIPT`` → ``SCRIPT LOAD`` dance relies on that): error replies are sent and the
  connection stays open.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
from fakeredis import TcpFakeServer
from fakeredis._clients._tcp_server import TCPFakeRequestHandler

_STOP_TIMEOUT = 5.0


class _RedisLikeHandler(TCPFakeRequestHandler):
    """fakeredis' request handler, answering like Redis in the two ways above."""

    def setup(self) -> None:
        super().setup()
        info = getattr(self.current_client, "_client_info", None)
        if isinstance(info, dict):
            for field in ("addr", "laddr"):
                value = info.get(field)
                if isinstance(value, tuple):
                    info[field] = f"{value[0]}:{value[1]}"
        self.current_client.read_response = _errors_as_replies(self.current_client.read_response)  # type: ignore[method-assign]


def _errors_as_replies(read_response: Callable[..., Any]) -> Callable[..., Any]:
    """``read_response`` returning an error reply (which the handler writes as ``-ERR ...``) instead of
    raising it (which makes the handler close the connection)."""

    def read(*args: Any, **kwargs: Any) -> Any:
        try:
            return read_response(*args, **kwargs)
        except redis.ResponseError as exc:
            return exc

    return read


@contextmanager
def embedded_redis() -> Iterator[str]:
    """Serve an in-memory Redis on a free port of 127.0.0.1 in a thread; yields its URL."""
    server = TcpFakeServer(("127.0.0.1", 0), server_type="redis")
    server.RequestHandlerClass = _RedisLikeHandler
    thread = threading.Thread(target=server.serve_forever, name="embedded-redis", daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{server.server_address[1]}/0"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(_STOP_TIMEOUT)
