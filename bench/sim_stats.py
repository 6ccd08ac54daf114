"""Counters of the simulated upstream, readable by tests in-process and through ``GET /stats``.

Each server process writes only its own slot of a cell array; readers sum the slots. With several
worker processes the array is shared memory, so any process can report the totals without locks.
"""

from __future__ import annotations

from collections.abc import MutableSequence
from enum import IntEnum
from multiprocessing.sharedctypes import RawArray


class Counter(IntEnum):
    CONNECTIONS = 0
    """TCP connections accepted."""
    REQUESTS = 1
    """Chat-completion requests received (well-formed HTTP, any body)."""
    STREAMS = 2
    """Of those, requests that asked for a stream."""
    COMPLETED = 3
    """Chat-completion responses written to the end (errors included)."""
    CLIENT_DISCONNECTS = 4
    """Connections the client closed while a response was still pending or in progress."""
    CUTS = 5
    """Connections the server closed on purpose (``cut``)."""
    HANGS = 6
    """Requests left unanswered on purpose (``hang``)."""


class UpstreamStats:
    """Counter totals over every server process sharing ``cells``."""

    __slots__ = ("_base", "_cells", "_slots")

    def __init__(self, cells: MutableSequence[int] | None = None, slot: int = 0, slots: int = 1) -> None:
        self._cells: MutableSequence[int] = cells if cells is not None else [0] * len(Counter)
        self._base = slot * len(Counter)
        self._slots = slots

    @staticmethod
    def shared_cells(slots: int) -> MutableSequence[int]:
        """Shared-memory cells for ``slots`` processes forked after this call."""
        cells: MutableSequence[int] = RawArray("q", slots * len(Counter))
        return cells

    def for_slot(self, slot: int) -> UpstreamStats:
        """The view a forked server process ``slot`` writes through."""
        return UpstreamStats(self._cells, slot, self._slots)

    def add(self, counter: Counter) -> None:
        self._cells[self._base + counter] += 1

    def total(self, counter: Counter) -> int:
        width = len(Counter)
        return sum(self._cells[slot * width + counter] for slot in range(self._slots))

    def snapshot(self) -> dict[str, int | list[int]]:
        """Every counter's total, plus the requests each server process received."""
        totals: dict[str, int | list[int]] = {c.name.lower(): self.total(c) for c in Counter}
        width = len(Counter)
        totals["requests_by_process"] = [
            self._cells[slot * width + Counter.REQUESTS] for slot in range(self._slots)
        ]
        return totals

    def reset(self) -> None:
        for index in range(len(self._cells)):
            self._cells[index] = 0

    @property
    def connections(self) -> int:
        return self.total(Counter.CONNECTIONS)

    @property
    def requests(self) -> int:
        return self.total(Counter.REQUESTS)

    @property
    def streams(self) -> int:
        return self.total(Counter.STREAMS)

    @property
    def completed(self) -> int:
        return self.total(Counter.COMPLETED)

    @property
    def client_disconnects(self) -> int:
        return self.total(Counter.CLIENT_DISCONNECTS)

    @property
    def cuts(self) -> int:
        return self.total(Counter.CUTS)

    @property
    def hangs(self) -> int:
        return self.total(Counter.HANGS)
