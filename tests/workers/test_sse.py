"""The SSE reader the upstream adapters use."""

from __future__ import annotations

from collections.abc import AsyncIterator

from workers.providers.sse import sse_data


async def lines(*items: str) -> AsyncIterator[str]:
    for item in items:
        yield item


async def read(*items: str) -> list[str]:
    return [data async for data in sse_data(lines(*items))]


async def test_events_split_on_blank_lines() -> None:
    """Each blank-line-terminated event yields its data once."""
    assert await read("data: {}", "", "data: [DONE]", "") == ["{}", "[DONE]"]


async def test_comments_and_other_fields_are_dropped() -> None:
    """Comment lines (keep-alive pings) and event/id fields never reach the caller."""
    assert await read(": ping", "", "event: message", "id: 7", "data: x", "") == ["x"]


async def test_multi_line_data_is_joined() -> None:
    """Several data lines of one event are joined with a newline, as the SSE spec says."""
    assert await read("data: a", "data:b", "") == ["a\nb"]


async def test_last_event_without_blank_line_is_kept() -> None:
    """An event cut off before its blank line is still delivered at end of stream."""
    assert await read("data: tail") == ["tail"]
