"""Server-sent events, decoded from a response body as its bytes arrive: the ``data`` of each event
(comments and other fields dropped).  One event (or one line) longer than the decoder's bound, or a
body longer than its stream bound, raises :class:`EventTooLarge`: the work and memory per event and
per call stay bounded whatever the server sends."""

from __future__ import annotations

MAX_EVENT_BYTES = 4 * 1024 * 1024  # one line, or the data of one event, at most
MAX_STREAM_BYTES = 64 * 1024 * 1024
"""A whole streamed answer at most: twice the SSE of 128k tokens of OpenAI chunks, the longest answers
models give, and what one call may make a worker parse and publish."""


class EventTooLarge(Exception):
    """The server sent a line or an event longer than the decoder's bound."""


class SSEDecoder:
    """Feed body bytes in pieces, get the data of each event they complete; multi-line data is joined with
    ``\\n`` as the SSE spec says, and lines may end in ``\\n``, ``\\r\\n`` or ``\\r``."""

    __slots__ = ("_data", "_data_size", "_fed", "_limit", "_open", "_open_size", "_stream_limit", "_tail")

    def __init__(self, limit: int = MAX_EVENT_BYTES, stream_limit: int | None = None) -> None:
        self._limit = limit
        self._stream_limit = MAX_STREAM_BYTES if stream_limit is None else stream_limit
        self._fed = 0  # bytes of the body so far
        self._tail = b""  # the start of a line not yet ended
        self._open: list[bytes] = []  # later pieces, no line end yet: joined once one comes
        self._open_size = 0
        self._data: list[bytes] = []  # the data lines of the event not yet ended
        self._data_size = 0

    def feed(self, piece: bytes) -> list[bytes]:
        self._fed += len(piece)
        if self._fed > self._stream_limit:
            raise EventTooLarge(f"the stream is longer than {self._stream_limit} bytes")
        # The usual piece, told at a glance: one whole event of one data line, nothing pending.
        end = len(piece) - 2
        if (
            piece.find(b"\n") == end
            and piece[end:] == b"\n\n"
            and piece[:6] == b"data: "
            and piece.find(b"\r") < 0
            and not (self._tail or self._open or self._data)
            and end <= self._limit
        ):
            return [piece[6:end]]
        if b"\n" not in piece and b"\r" not in piece:
            self._open.append(piece)
            self._open_size += len(piece)
            if len(self._tail) + self._open_size > self._limit:
                raise EventTooLarge(f"an event line is longer than {self._limit} bytes")
            return []
        if self._open:
            piece = b"".join([*self._open, piece])
            self._open, self._open_size = [], 0
        buffer = self._tail + piece if self._tail else piece
        hold = b""
        if b"\r" in buffer:
            if buffer.endswith(b"\r"):  # maybe the first half of a \r\n: decide with the next piece
                buffer, hold = buffer[:-1], b"\r"
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buffer.split(b"\n")
        self._tail = lines.pop() + hold
        if len(self._tail) > self._limit:
            raise EventTooLarge(f"an event line is longer than {self._limit} bytes")
        return self._events(lines)

    def end(self) -> list[bytes]:
        """The body ended: the data of an event cut off before its blank line is still delivered."""
        tail, self._tail = b"".join([self._tail, *self._open]), b""
        self._open, self._open_size = [], 0
        return self._events([*tail.replace(b"\r", b"\n").split(b"\n"), b""])

    def _events(self, lines: list[bytes]) -> list[bytes]:
        events: list[bytes] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    events.append(b"\n".join(data))
                    data = self._data = []
                    self._data_size = 0
            elif line.startswith(b"data:"):
                data.append(line[6:] if line.startswith(b"data: ") else line[5:])
                self._data_size += len(line)
                if self._data_size > self._limit:
                    raise EventTooLarge(f"an event's data is longer than {self._limit} bytes")
            elif line == b"data":
                data.append(b"")
        return events
