"""The simulated upstream's HTTP/1.1 connection: httptools parsing, keep-alive, timers for every delay.

One request is answered at a time per connection (later pipelined requests wait in order). Delays use
``loop.call_later`` callbacks, so thousands of slow streams cost timers, not tasks or threads.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, cast

import httptools
import orjson

from bench.sim_behaviour import BadBehaviour, Behaviour, parse_behaviour
from bench.sim_full import FullChunkWriter, full_completion_body
from bench.sim_payloads import (
    DONE_EVENT,
    CalledTool,
    ChunkWriter,
    completion_body,
    count_prompt_tokens,
    error_body,
    models_body,
)
from bench.sim_stats import Counter, UpstreamStats

COMPLETION_PATHS = frozenset({b"/v1/chat/completions", b"/chat/completions"})
MODELS_PATHS = frozenset({b"/v1/models", b"/models"})
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
)
LAST_CHUNK = b"0\r\n\r\n"


def http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


@dataclass(slots=True)
class _Request:
    method: bytes
    path: bytes
    body: bytes
    keep_alive: bool


@dataclass(slots=True)
class _Completion:
    behaviour: Behaviour
    model: str
    include_usage: bool
    prompt_tokens: int
    tool: CalledTool
    n: int = 1
    writer: ChunkWriter | FullChunkWriter | None = None
    pieces: list[str] = field(default_factory=list)
    sent: int = 0

    @property
    def total(self) -> int:
        return len(self.pieces) if self.behaviour.tools else self.behaviour.tokens

    @property
    def full(self) -> bool:
        """Answer with every optional field (:mod:`bench.sim_full`): asked for, or ``n`` choices."""
        return (self.behaviour.all_fields or self.n > 1) and not self.behaviour.tools


class SimProtocol(asyncio.Protocol):
    """One client connection to the simulated upstream."""

    def __init__(self, stats: UpstreamStats, connections: set[SimProtocol]) -> None:
        self._stats = stats
        self._connections = connections
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []
        self._queue: deque[_Request] = deque()
        self._busy = False
        self._keep_alive = True
        self._timer: asyncio.TimerHandle | None = None
        self._shutting_down = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self._connections.add(self)
        self._stats.add(Counter.CONNECTIONS)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._write_json(400, error_body(400, "Malformed HTTP request."), keep_alive=False)
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        if (self._busy or self._queue) and not self._shutting_down:
            self._stats.add(Counter.CLIENT_DISCONNECTS)
        self._busy = False
        self._queue.clear()
        self._transport = None

    def shut_down(self) -> None:
        """Drop the connection because the server is closing (not counted as a client disconnect)."""
        self._shutting_down = True
        if self._transport is not None:
            self._transport.abort()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        method = self._parser.get_method()
        path = self._url.split(b"?", 1)[0]
        request = _Request(method, path, b"".join(self._body), self._parser.should_keep_alive())
        if self._busy:
            self._queue.append(request)
        else:
            self._handle(request)

    # routing
    def _handle(self, request: _Request) -> None:
        self._busy = True
        self._keep_alive = request.keep_alive
        if request.path in COMPLETION_PATHS and request.method == b"POST":
            self._start_completion(request.body)
        elif request.path in MODELS_PATHS and request.method == b"GET":
            self._answer(200, models_body(["sim"]))
        elif request.path == b"/stats" and request.method == b"GET":
            self._answer(200, orjson.dumps(self._stats.snapshot()))
        elif request.path == b"/stats/reset" and request.method == b"POST":
            self._stats.reset()
            self._answer(200, b'{"reset":true}')
        else:
            route = f"{request.method.decode()} {request.path.decode()}"
            self._answer(404, error_body(404, f"No route for {route}."))

    def _start_completion(self, raw: bytes) -> None:
        self._stats.add(Counter.REQUESTS)
        try:
            body = orjson.loads(raw)
            if not isinstance(body, dict) or not isinstance(body.get("model"), str):
                raise BadBehaviour("the body must be a JSON object with a string 'model'")
            behaviour = parse_behaviour(body["model"])
        except (orjson.JSONDecodeError, BadBehaviour) as exc:
            self._stats.add(Counter.COMPLETED)
            self._answer(400, error_body(400, str(exc)))
            return
        stream = body.get("stream") is True
        if stream:
            self._stats.add(Counter.STREAMS)
        if behaviour.hang:
            self._stats.add(Counter.HANGS)
            return
        options = body.get("stream_options")
        completion = _Completion(
            behaviour=behaviour,
            model=body["model"],
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
            prompt_tokens=count_prompt_tokens(body.get("messages")),
            tool=_called_tool(body.get("tools")),
            n=_choices(body.get("n")),
        )
        begin = self._begin_stream if stream else self._begin_answer
        self._later(behaviour.latency_s, begin, completion)

    # non-stream
    def _begin_answer(self, completion: _Completion) -> None:
        behaviour = completion.behaviour
        if behaviour.status != 200:
            self._answer_error(behaviour)
        elif behaviour.cut is not None:
            self._cut()
        else:
            self._later(behaviour.generation_s, self._send_answer, completion)

    def _send_answer(self, completion: _Completion) -> None:
        behaviour = completion.behaviour
        if behaviour.bad_json:
            body = b'{"id":"chatcmpl-broken","object":"chat.completion","choices":[{'
        elif completion.full:
            body = full_completion_body(
                completion.model, behaviour.tokens, completion.prompt_tokens, completion.n
            )
        else:
            tool = completion.tool if behaviour.tools else None
            body = completion_body(completion.model, behaviour.tokens, completion.prompt_tokens, tool)
        self._stats.add(Counter.COMPLETED)
        self._answer(200, body)

    def _answer_error(self, behaviour: Behaviour) -> None:
        headers = b""
        if behaviour.retry_after is not None:
            headers = b"retry-after: %s\r\n" % _seconds_text(behaviour.retry_after)
        self._stats.add(Counter.COMPLETED)
        self._answer(behaviour.status, error_body(behaviour.status), headers)

    # stream
    def _begin_stream(self, completion: _Completion) -> None:
        behaviour = completion.behaviour
        if behaviour.status != 200:
            self._answer_error(behaviour)
            return
        if completion.full:
            full = completion.writer = FullChunkWriter(
                completion.model, completion.include_usage, completion.n, behaviour.tokens
            )
            first = full.role()
        else:
            writer = completion.writer = ChunkWriter(completion.model, completion.include_usage)
            if behaviour.tools:
                completion.pieces = completion.tool.pieces()
                first = writer.tool_call_start(completion.tool)
            else:
                first = writer.role()
        self._write(STREAM_HEAD + http_chunk(first))
        self._later(behaviour.ttft_s, self._stream_step, completion)

    def _stream_step(self, completion: _Completion) -> None:
        behaviour = completion.behaviour
        stop = completion.total if behaviour.cut is None else min(completion.total, behaviour.cut)
        if behaviour.itl_s > 0 and completion.sent < stop:
            self._write(http_chunk(self._piece(completion)))
            completion.sent += 1
            if completion.sent < stop:
                self._later(behaviour.itl_s, self._stream_step, completion)
                return
        events = []
        while completion.sent < stop:
            events.append(self._piece(completion))
            completion.sent += 1
        if behaviour.cut is not None and completion.sent >= behaviour.cut:
            if events:
                self._write(http_chunk(b"".join(events)))
            self._cut()
            return
        events.append(self._stream_end(completion))
        self._stats.add(Counter.COMPLETED)
        self._write(http_chunk(b"".join(events)) + LAST_CHUNK)
        self._finish()

    def _piece(self, completion: _Completion) -> bytes:
        writer = completion.writer
        assert writer is not None
        if isinstance(writer, FullChunkWriter):
            return writer.content(completion.sent)
        if completion.behaviour.tools:
            return writer.tool_call_piece(completion.tool, completion.pieces[completion.sent])
        if completion.behaviour.bad_json and completion.sent == 0:
            return writer.malformed()
        return writer.content(completion.sent)

    def _stream_end(self, completion: _Completion) -> bytes:
        writer = completion.writer
        assert writer is not None
        end = writer.finish("tool_calls" if completion.behaviour.tools else "stop")
        if completion.include_usage:
            end += writer.usage(completion.prompt_tokens, completion.total)
        return end + DONE_EVENT

    # output
    def _later(self, delay: float, callback: Callable[[_Completion], None], completion: _Completion) -> None:
        if delay <= 0:
            callback(completion)
        else:
            self._timer = self._loop.call_later(delay, callback, completion)

    def _answer(self, status: int, body: bytes, extra_headers: bytes = b"") -> None:
        self._write_json(status, body, self._keep_alive, extra_headers)
        self._finish()

    def _write_json(self, status: int, body: bytes, keep_alive: bool, extra_headers: bytes = b"") -> None:
        reason = _reason(status)
        connection = b"" if keep_alive else b"connection: close\r\n"
        head = b"HTTP/1.1 %d %b\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%b%b\r\n" % (
            status,
            reason,
            len(body),
            connection,
            extra_headers,
        )
        self._write(head + body)

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _finish(self) -> None:
        self._busy = False
        self._timer = None
        if not self._keep_alive:
            self._close()
        elif self._queue:
            self._handle(self._queue.popleft())

    def _cut(self) -> None:
        self._stats.add(Counter.CUTS)
        self._busy = False
        self._queue.clear()
        self._close()

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _called_tool(tools: Any) -> CalledTool:
    """The request's first tool (a function or a custom tool), or the default function without one."""
    try:
        custom = tools[0].get("type") == "custom"
        name = tools[0]["custom" if custom else "function"]["name"]
    except (TypeError, KeyError, IndexError, AttributeError):
        return CalledTool()
    return CalledTool(name, custom) if isinstance(name, str) else CalledTool()


def _choices(n: Any) -> int:
    """The request's ``n``, within OpenAI's bounds (1 to 128)."""
    return min(n, 128) if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1


def _seconds_text(seconds: float) -> bytes:
    return str(int(seconds) if seconds == int(seconds) else seconds).encode()


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Status"
