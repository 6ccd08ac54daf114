"""Server-sent events, decoded from a response body as its bytes arrive: the ``data`` of each event
(comments and other fields dropped)."""

from __future__ import annotations


class SSEDecoder:
    """Feed body bytes in pieces, get the data of each event they complete; multi-line data is joined with
    ``\\n`` as the SSE spec says, and lines may end in ``\\n``, ``\\r\\n`` or ``\\r``."""

    __slots__ = ("_data", "_tail")

    def __init__(self) -> None:
        self._tail = b""  # the start of a line not yet ended
        self._data: list[bytes] = []  # the data lines of the event not yet ended

    def feed(self, piece: bytes) -> list[bytes]:
        buffer = self._tail + piece if self._tail else piece
        hold = b""
        if b"\r" in buffer:
            if buffer.endswith(b"\r"):  # maybe the first half of a \r\n: decide with the next piece
                buffer, hold = buffer[:-1], b"\r"
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buffer.split(b"\n")
        self._tail = lines.pop() + hold
        return self._events(lines)

    def end(self) -> list[bytes]:
        """The body ended: the data of an event cut off before its blank line is still delivered."""
        tail, self._tail = self._tail, b""
        return self._events([*tail.replace(b"\r", b"\n").split(b"\n"), b""])

    def _events(self, lines: list[bytes]) -> list[bytes]:
        events: list[bytes] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    events.append(b"\n".join(data))
                    data = self._data = []
            elif line.startswith(b"data:"):
                data.append(line[6:] if line.startswith(b"data: ") else line[5:])
            elif line == b"data":
                data.append(b"")
        return events
