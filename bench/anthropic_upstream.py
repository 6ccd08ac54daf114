"""A simulated Anthropic Messages API on a real socket, for tests of the ``anthropic`` adapter.

``POST /v1/messages`` checks ``x-api-key`` (401 ``authentication_error``) and ``anthropic-version`` (400),
requires ``max_tokens`` and ``messages`` (400 ``invalid_request_error``), and answers a ``message`` body, or
with ``"stream": true`` Anthropic's event stream (``message_start``, ``content_block_start``/``delta``/
``stop``, ``ping``, ``message_delta`` with ``stop_reason`` and usage, ``message_stop``) over HTTP/1.1
keep-alive with chunked encoding.

The answer depends on words in the model name:

``tool``         a ``tool_use`` of the request's first tool (``stop_reason: tool_use``), or, when the last
                 user turn carries ``tool_result`` blocks, text quoting them
``overloaded``   529 ``overloaded_error``
``rate-limited`` 429 ``rate_limit_error`` with ``retry-after: 7``
``bad-request``  400 ``invalid_request_error``
``hang``         never answers (until the client leaves)
``cut-early``    streams ``message_start``, then closes the connection (nothing to show yet)
``cut``          streams the first content block, then closes the connection
``error-event``  streams ``message_start``, then an ``overloaded_error`` event
anything else    text: ``Hello from Claude. You said: <last user text>``, one word per delta
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from dataclasses import dataclass, field
from typing import Any

import orjson

STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


@dataclass
class AnthropicUpstreamStats:
    requests: int = 0  # POST /v1/messages received
    client_closed: int = 0  # connections the client closed while an answer was pending or streaming
    last_body: dict[str, Any] = field(default_factory=dict)
    last_headers: dict[str, str] = field(default_factory=dict)


class _ClientGone(Exception):
    pass


class AnthropicUpstream:
    """A running simulated Anthropic API on this event loop."""

    def __init__(self, api_key: str, token_delay: float) -> None:
        self.api_key = api_key
        self.token_delay = token_delay
        self.stats = AnthropicUpstreamStats()
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_connection, "127.0.0.1", 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while await self._serve_one(reader, writer):
                pass
        except (_ClientGone, ConnectionError):
            self.stats.client_closed += 1
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client closed an idle keep-alive connection
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        method, path, _ = request_line.split(" ", 2)
        if (method, path) != ("POST", "/v1/messages"):
            await _respond(
                writer, 404, {"type": "error", "error": {"type": "not_found_error", "message": path}}
            )
            return True
        self.stats.requests += 1
        self.stats.last_headers = headers
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            await _respond(writer, 400, _error("invalid_request_error", "Body is not JSON."))
            return True
        self.stats.last_body = request
        return await self._answer(request, headers, reader, writer)

    async def _answer(
        self,
        request: dict[str, Any],
        headers: dict[str, str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        model = str(request.get("model", ""))
        if headers.get("x-api-key") != self.api_key:
            await _respond(writer, 401, _error("authentication_error", "invalid x-api-key"))
        elif not headers.get("anthropic-version"):
            await _respond(
                writer, 400, _error("invalid_request_error", "anthropic-version header is required")
            )
        elif "max_tokens" not in request or not request.get("messages"):
            await _respond(
                writer, 400, _error("invalid_request_error", "max_tokens and messages are required")
            )
        elif "overloaded" in model:
            await _respond(writer, 529, _error("overloaded_error", "Overloaded"))
        elif "rate-limited" in model:
            await _respond(writer, 429, _error("rate_limit_error", "Slow down"), {"retry-after": "7"})
        elif "bad-request" in model:
            await _respond(writer, 400, _error("invalid_request_error", "prompt is too long"))
        elif "hang" in model:
            await reader.read()  # returns once the client closes the connection
            raise _ClientGone
        elif request.get("stream"):
            return await self._stream(request, writer)
        else:
            await _respond(writer, 200, self._message(request))
        return True

    def _message(self, request: dict[str, Any]) -> dict[str, Any]:
        blocks, stop_reason = _answer_blocks(request, next(self._ids))
        return {
            "id": f"msg_sim{next(self._ids)}",
            "type": "message",
            "role": "assistant",
            "model": request["model"],
            "content": blocks,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": _prompt_tokens(request), "output_tokens": _output_tokens(blocks)},
        }

    async def _stream(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> bool:
        message = self._message(request)
        model = str(request["model"])
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {**message["usage"], "output_tokens": 1},
        }
        writer.write(STREAM_HEAD)
        await self._send(writer, "message_start", {"type": "message_start", "message": start})
        if "cut-early" in model:
            writer.transport.abort()
            return False
        if "error-event" in model:
            await self._send(writer, "error", _error("overloaded_error", "Overloaded"))
            await _end_chunks(writer)
            return True
        await self._send(writer, "ping", {"type": "ping"})
        for index, block in enumerate(message["content"]):
            await self._stream_block(writer, index, block)
            if "cut" in model:
                writer.transport.abort()
                return False
        delta = {"stop_reason": message["stop_reason"], "stop_sequence": None}
        usage = {"output_tokens": message["usage"]["output_tokens"]}
        await self._send(writer, "message_delta", {"type": "message_delta", "delta": delta, "usage": usage})
        await self._send(writer, "message_stop", {"type": "message_stop"})
        await _end_chunks(writer)
        return True

    async def _stream_block(self, writer: asyncio.StreamWriter, index: int, block: dict[str, Any]) -> None:
        start: dict[str, Any]
        if block["type"] == "text":
            start = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in _words(block["text"])]
        else:
            start = {**block, "input": {}}
            arguments = orjson.dumps(block["input"]).decode()
            deltas = [
                {"type": "input_json_delta", "partial_json": arguments[i : i + 8]}
                for i in range(0, len(arguments), 8)
            ]
        await self._send(
            writer,
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": start},
        )
        for delta in deltas:
            await self._send(
                writer, "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
            )
        await self._send(writer, "content_block_stop", {"type": "content_block_stop", "index": index})

    async def _send(self, writer: asyncio.StreamWriter, event: str, data: dict[str, Any]) -> None:
        payload = b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
        writer.write(b"%x\r\n%b\r\n" % (len(payload), payload))
        try:
            await writer.drain()
        except ConnectionError as exc:
            raise _ClientGone from exc
        if self.token_delay:
            await asyncio.sleep(self.token_delay)


def _answer_blocks(request: dict[str, Any], seq: int) -> tuple[list[dict[str, Any]], str]:
    last = request["messages"][-1]
    content = last.get("content")
    blocks = content if isinstance(content, list) else [{"type": "text", "text": str(content)}]
    results = [b for b in blocks if b.get("type") == "tool_result"]
    if "tool" in str(request["model"]) and not results:
        name = (request.get("tools") or [{"name": "get_weather"}])[0]["name"]
        tool_use = {
            "type": "tool_use",
            "id": f"toolu_sim{seq}",
            "name": name,
            "input": {"location": "Montreal"},
        }
        return [{"type": "text", "text": "Let me check."}, tool_use], "tool_use"
    if results:
        text = "The tool said: " + " ".join(_text(r.get("content")) for r in results)
    else:
        text = "Hello from Claude. You said: " + " ".join(
            _text([b]) for b in blocks if b.get("type") == "text"
        )
    return [{"type": "text", "text": text}], "end_turn"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(str(b.get("text", "")) for b in content or () if isinstance(b, dict))


def _words(text: str) -> list[str]:
    words = text.split(" ")
    return [w + " " for w in words[:-1]] + [words[-1]]


def _prompt_tokens(request: dict[str, Any]) -> int:
    return sum(len(_text(m.get("content")).split()) for m in request["messages"]) + len(
        str(request.get("system", "")).split()
    )


def _output_tokens(blocks: list[dict[str, Any]]) -> int:
    return sum(len(b["text"].split()) if b["type"] == "text" else 10 for b in blocks)


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


async def _respond(
    writer: asyncio.StreamWriter, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    payload = orjson.dumps(body)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = (
        f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n{extra}\r\n"
    )
    writer.write(head.encode() + payload)
    await writer.drain()


async def _end_chunks(writer: asyncio.StreamWriter) -> None:
    writer.write(b"0\r\n\r\n")
    await writer.drain()


async def start_anthropic_upstream(
    api_key: str = "sk-ant-test", token_delay: float = 0.0
) -> AnthropicUpstream:
    """Start a simulated Anthropic API on a free port of 127.0.0.1; ``await upstream.close()`` when done."""
    upstream = AnthropicUpstream(api_key, token_delay)
    await upstream.start()
    return upstream
