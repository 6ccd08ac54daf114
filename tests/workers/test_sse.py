"""The SSE decoder the upstream adapters read response bodies with."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.providers.sse import EventTooLarge, SSEDecoder


def decode(*pieces: bytes) -> list[bytes]:
    decoder = SSEDecoder()
    events = [data for piece in pieces for data in decoder.feed(piece)]
    return events + decoder.end()


def test_events_split_on_blank_lines() -> None:
    """Each blank-line-terminated event yields its data once."""
    assert decode(b"data: {}\n\ndata: [DONE]\n\n") == [b"{}", b"[DONE]"]


def test_comments_and_other_fields_are_dropped() -> None:
    """Comment lines (keep-alive pings) and event/id fields never reach the caller."""
    assert decode(b": ping\n\nevent: message\nid: 7\ndata: x\n\n") == [b"x"]


def test_multi_line_data_is_joined() -> None:
    """Several data lines of one event are joined with a newline; a bare `data` line is an empty line."""
    assert decode(b"data: a\ndata:b\ndata\n\n") == [b"a\nb\n"]


def test_last_event_without_blank_line_is_kept() -> None:
    """An event cut off before its blank line is still delivered at end of stream."""
    assert decode(b"data: tail") == [b"tail"]


def test_events_split_across_pieces_at_any_byte() -> None:
    """The same events come out whatever byte the body is cut at."""
    body = b'data: {"a":1}\n\n: ping\n\ndata: [DONE]\n\n'
    for cut in range(len(body)):
        assert decode(body[:cut], body[cut:]) == [b'{"a":1}', b"[DONE]"], cut


def test_a_whole_one_line_event_after_pending_lines_joins_them() -> None:
    """A piece that is one whole event still joins what earlier pieces left open (a data line, a line's
    start) and still splits on a CR inside it."""
    assert decode(b"data: a\n", b"data: b\n\n") == [b"a\nb"]
    assert decode(b"da", b"ta: b\n\n") == [b"b"]
    assert decode(b"data: a\rb\n\n") == [b"a"]
    assert decode(b"data: a\r", b"data: b\n\n") == [b"a\nb"]


_PARTS = [
    b"data: ",
    b"data:",
    b"data",
    b"x",
    b"{}",
    b"\n",
    b"\r",
    b"\r\n",
    b": ping",
    b"data: x\n\n",
    b"\n\n",
]


@given(st.lists(st.lists(st.sampled_from(_PARTS), max_size=6).map(b"".join), max_size=8))
def test_any_cut_into_pieces_decodes_as_byte_by_byte(pieces: list[bytes]) -> None:
    """However a body is cut into pieces (whole events, halves, lone line ends), the events are those of
    the same body fed one byte at a time."""
    body = b"".join(pieces)
    assert decode(*pieces) == decode(*(body[i : i + 1] for i in range(len(body))))


def test_crlf_and_cr_line_ends() -> None:
    """CRLF and lone CR end lines too, even when a CRLF is split between two pieces."""
    assert decode(b"data: a\r", b"\n\r\ndata: b\r\rdata: c\r\n\r\n") == [b"a", b"b", b"c"]


def test_a_line_longer_than_the_limit_raises_even_in_small_pieces() -> None:
    """Pieces of one never-ending line are kept unjoined, and the line raises EventTooLarge past the limit."""
    decoder = SSEDecoder(limit=100)
    for _ in range(10):
        assert decoder.feed(b"data: " + b"a" * 4) == []
    with pytest.raises(EventTooLarge):
        for _ in range(100):
            decoder.feed(b"a" * 4)


def test_an_event_of_many_data_lines_longer_than_the_limit_raises() -> None:
    """Many short data lines without the blank line that ends the event raise EventTooLarge too."""
    decoder = SSEDecoder(limit=100)
    with pytest.raises(EventTooLarge):
        decoder.feed(b"data: abcdefgh\n" * 20)


def test_a_line_split_across_pieces_within_the_limit_decodes() -> None:
    """A line fed in many pieces without a line end decodes whole once the end comes."""
    decoder = SSEDecoder(limit=100)
    for piece in (b"da", b"ta: he", b"llo", b" world"):
        assert decoder.feed(piece) == []
    assert decoder.feed(b"\n\n") == [b"hello world"]
    assert decoder.feed(b"data: tail") == [] and decoder.end() == [b"tail"]


def test_a_stream_longer_than_its_bound_raises_however_small_its_events() -> None:
    """Events each well within bounds still raise EventTooLarge once the whole body passes the stream's
    bound: the work and memory of one call are bounded, not only those of one event."""
    decoder = SSEDecoder(stream_limit=1000)
    seen = 0
    with pytest.raises(EventTooLarge, match="stream"):
        for _ in range(200):
            seen += len(decoder.feed(b"data: x\n\n"))
    assert 0 < seen < 120
