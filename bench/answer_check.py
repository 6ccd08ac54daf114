"""Checks that an answer relayed to the load generator is complete and in order.

The simulated upstream's content is a known sequence of tokens (``bench.sim_payloads.token_text``), so
any lost, duplicated or reordered chunk shows as content that stops matching the expected text.
"""

from __future__ import annotations

import orjson

DONE = b"[DONE]"


class StreamVerifier:
    """Follows the SSE events of one ``chat.completion.chunk`` stream and remembers the first fault."""

    __slots__ = (
        "_expected",
        "_finishes",
        "_position",
        "_saw_role",
        "chunks",
        "done",
        "error",
        "error_detail",
        "events",
    )

    def __init__(self, expected_content: str) -> None:
        self._expected = expected_content
        self._position = 0
        self._finishes = 0
        self._saw_role = False
        self.chunks = 0
        """Events that carried content."""
        self.events = 0
        self.done = False
        self.error: str | None = None
        self.error_detail = ""

    def feed_event(self, event: bytes) -> bool:
        """Check one SSE event (without its blank line); True when it carried content."""
        data = _data_of(event)
        if data is None:
            return False  # comment or keep-alive ping
        self.events += 1
        if self.done:
            return self._fault("after_done")
        if data == DONE:
            self.done = True
            return False
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return self._fault("bad_json")
        if "error" in chunk:
            return self._error_event(chunk["error"])
        choices = chunk.get("choices")
        if not choices:
            return False
        choice = choices[0]
        delta = choice.get("delta") or {}
        if "role" in delta:
            self._saw_role = True
        if choice.get("finish_reason") is not None:
            self._finishes += 1
        text = delta.get("content")
        if not text:
            return False
        if not self._saw_role:
            return self._fault("no_role")
        if not self._expected.startswith(text, self._position):
            return self._fault("out_of_order")
        self._position += len(text)
        self.chunks += 1
        return True

    def finish(self) -> str | None:
        """The stream's fault once the response is over, or None when it was whole and in order."""
        if self.error is None:
            if not self.done:
                self.error = "no_done"
            elif self._position != len(self._expected):
                self.error = "incomplete"
            elif self._finishes != 1:
                self.error = "finish_reason"
        return self.error

    def _fault(self, kind: str) -> bool:
        if self.error is None:
            self.error = kind
        return False

    def _error_event(self, error: object) -> bool:
        """An error event ends the stream: its kind names the OpenAI ``code``, its message is kept."""
        code = error.get("code") if isinstance(error, dict) else None
        if self.error is None:
            self.error_detail = str(error.get("message") if isinstance(error, dict) else error)[:200]
        return self._fault(f"error_event:{code}" if isinstance(code, str) and code else "error_event")


def _data_of(event: bytes) -> bytes | None:
    data = None
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            piece = line[5:].removeprefix(b" ").rstrip(b"\r")
            data = piece if data is None else data + b"\n" + piece
    return data


def check_completion(body: bytes, expected_content: str) -> str | None:
    """The fault of a non-stream ``chat.completion`` body, or None when it carries the expected content."""
    try:
        completion = orjson.loads(body)
        content = completion["choices"][0]["message"]["content"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return "bad_json"
    return None if content == expected_content else "wrong_content"


def error_kind(status: int, body: bytes) -> tuple[str, str]:
    """``http_STATUS``, plus the OpenAI error ``code`` when the body has one (``http_503:worker_lost``),
    and the error's message (or the start of the body) as a sample for people."""
    try:
        error = orjson.loads(body)["error"]
        code, message = error.get("code"), str(error.get("message"))
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        code, message = None, body[:200].decode(errors="replace")
    kind = f"http_{status}:{code}" if isinstance(code, str) and code else f"http_{status}"
    return kind, message[:200]
