"""The load generator's checks of relayed answers: every chunk present, in order, and terminated."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from bench.answer_check import StreamVerifier, check_completion, error_kind
from bench.sim_payloads import ChunkWriter, expected_content

WORKER_LOST_EVENT = b'data: {"error": {"message": "gone", "code": "worker_lost"}}'


def events_of(raw: bytes) -> list[bytes]:
    return [event for event in raw.split(b"\n\n") if event]


def good_stream(tokens: int) -> list[bytes]:
    writer = ChunkWriter("sim", include_usage=True)
    raw = writer.role() + b"".join(writer.content(i) for i in range(tokens))
    raw += writer.finish("stop") + writer.usage(3, tokens) + b"data: [DONE]\n\n"
    return events_of(raw)


def verify(events: list[bytes], tokens: int) -> tuple[str | None, int]:
    verifier = StreamVerifier(expected_content(tokens))
    for event in events:
        verifier.feed_event(event)
    return verifier.finish(), verifier.chunks


def test_whole_stream_passes_and_counts_content_chunks() -> None:
    """A whole stream has no fault and counts one chunk per content token."""
    assert verify(good_stream(5), 5) == (None, 5)


def test_coalesced_content_still_verifies() -> None:
    """Several tokens in one chunk are accepted as long as the text stays in order."""
    merged = {"choices": [{"index": 0, "delta": {"content": "w1 w2 "}, "finish_reason": None}]}
    events = good_stream(3)
    events[2:4] = [b"data: " + orjson.dumps(merged)]
    assert verify(events, 3) == (None, 2)


@pytest.mark.parametrize(
    ("mangle", "fault"),
    [
        (lambda e: [e[0], e[2], e[1], *e[3:]], "out_of_order"),
        (lambda e: [e[0], e[1], e[1], *e[2:]], "out_of_order"),
        (lambda e: [*e[:3], *e[4:]], "incomplete"),
        (lambda e: e[:-1], "no_done"),
        (lambda e: [*e, e[1]], "after_done"),
        (lambda e: [e[0], b'data: {"choices": [', *e[1:]], "bad_json"),
        (lambda e: [*e[:-3], *e[-3:-2], *e[-3:]], "finish_reason"),
        (lambda e: e[1:], "no_role"),
        (lambda e: [e[0], b'data: {"error": {"message": "boom"}}'], "error_event"),
        (lambda e: [e[0], WORKER_LOST_EVENT], "error_event:worker_lost"),
    ],
)
def test_each_fault_is_named(mangle: Callable[[list[bytes]], list[bytes]], fault: str) -> None:
    """Reordered, duplicated, lost, unterminated, extra, malformed and error events are each caught."""
    assert verify(mangle(good_stream(3)), 3)[0] == fault


def test_comments_and_pings_are_ignored() -> None:
    """SSE comment lines such as ``: ping`` are not events and not faults."""
    events = good_stream(2)
    events.insert(2, b": ping")
    assert verify(events, 2) == (None, 2)


def test_completion_body_check() -> None:
    """A non-stream body passes only with the expected content."""
    body = {"choices": [{"message": {"role": "assistant", "content": "w0 w1 "}}]}
    assert check_completion(orjson.dumps(body), expected_content(2)) is None
    assert check_completion(orjson.dumps(body), expected_content(3)) == "wrong_content"
    assert check_completion(b"{oops", expected_content(2)) == "bad_json"


def test_error_kind_names_the_openai_error_code() -> None:
    """An error answer counts as its status plus the envelope's code, or the status alone without one."""
    envelope = {"error": {"message": "gone", "type": "server_error", "code": "worker_lost"}}
    assert error_kind(503, orjson.dumps(envelope)) == ("http_503:worker_lost", "gone")
    assert error_kind(502, b"<html>bad gateway</html>") == ("http_502", "<html>bad gateway</html>")
    assert error_kind(500, b'{"error": {"code": null}}')[0] == "http_500"


def test_error_event_message_is_kept() -> None:
    """The message of an in-stream error event is kept as the fault's detail."""
    verifier = StreamVerifier(expected_content(2))
    verifier.feed_event(good_stream(2)[0])
    verifier.feed_event(b'data: {"error": {"message": "upstream broke", "code": "upstream_error"}}')
    assert (verifier.finish(), verifier.error_detail) == ("error_event:upstream_error", "upstream broke")
