"""Streams read in threads, each one recording how it ended: for chaos tests that break the system
while streams run and then require every stream to end within a bound."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx

from tests.e2e.running_system import RunningSystem


@dataclass(slots=True)
class StreamRecord:
    """What one client saw of its stream."""

    contents: int = 0  # data events with content
    pings: int = 0
    ending: str = ""  # "done" ([DONE]), "error:<code>" (error event or HTTP error), "cut" (closed early)
    ended_at: float = 0.0
    first_content: threading.Event = field(default_factory=threading.Event)


class StreamReader:
    """One streaming request read to its end in a thread."""

    def __init__(
        self, system: RunningSystem, body: dict[str, object], *, read_timeout: float = 120.0
    ) -> None:
        self.record = StreamRecord()
        self._system = system
        self._body = {**body, "stream": True}
        self._timeout = httpx.Timeout(10.0, read=read_timeout)
        self._thread = threading.Thread(target=self._read, daemon=True)

    def start(self) -> StreamReader:
        self._thread.start()
        return self

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the stream to end; whether it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _read(self) -> None:
        record = self.record
        headers = {"Authorization": f"Bearer {self._system.api_key}"}
        try:
            with (
                httpx.Client(timeout=self._timeout) as client,
                client.stream(
                    "POST", f"{self._system.base_url}/chat/completions", json=self._body, headers=headers
                ) as response,
            ):
                if response.status_code != 200:
                    response.read()
                    record.ending = f"error:{response.json()['error']['code']}"
                    return
                for line in response.iter_lines():
                    if line.startswith(": ping"):
                        record.pings += 1
                    elif line == "data: [DONE]":
                        record.ending = "done"
                    elif line.startswith('data: {"error"'):
                        record.ending = "error:" + line.split('"code":', 1)[1].strip('"}')
                    elif line.startswith("data: {"):
                        record.contents += 1
                        record.first_content.set()
                if not record.ending:
                    record.ending = "cut"
        except httpx.HTTPError as exc:
            record.ending = f"cut:{type(exc).__name__}"
        finally:
            record.ended_at = time.monotonic()
            record.first_content.set()
