"""The worker → ingress frame codec and the SSE helpers."""

from __future__ import annotations

import pytest

from shared import events


@pytest.mark.parametrize("kind", events.KINDS)
def test_round_trip(kind: bytes) -> None:
    """Every frame kind decodes to what was encoded, payload newlines included."""
    payload = b'data: {"a":1}\n\ndata: {"b":2}\n\n'
    meta = {"provider": "simulated", "usage": {"prompt_tokens": 1}}
    frame = events.decode(events.encode(kind, "req-1", 7, meta, payload))
    assert (frame.kind, frame.request_id, frame.seq, frame.meta, frame.payload) == (
        kind,
        "req-1",
        7,
        meta,
        payload,
    )


def test_empty_meta_and_payload() -> None:
    """A frame without meta or payload decodes to an empty dict and empty bytes."""
    frame = events.decode(events.encode(events.START, "r", 0))
    assert frame.meta == {} and frame.payload == b""


def test_only_done_and_error_are_final() -> None:
    """D and E end a request; S and C do not."""
    finals = {kind for kind in events.KINDS if events.decode(events.encode(kind, "r", 0)).is_final}
    assert finals == {events.DONE, events.ERROR}


@pytest.mark.parametrize("message", [b"", b"Xr\n0\n\n", b"Cr\nnot-a-number\n\n", b"Cr\n0\n{broken\n", b"Cr0"])
def test_malformed_frames_raise_frame_error(message: bytes) -> None:
    """Anything that is not a well-formed frame raises FrameError (a ValueError), never something else."""
    with pytest.raises(events.FrameError):
        events.decode(message)


def test_sse_helpers() -> None:
    """sse_data writes one bare `data:` event of compact JSON; DONE and ping are OpenAI's exact bytes."""
    assert events.sse_data({"a": [1, 2]}) == b'data: {"a":[1,2]}\n\n'
    assert events.SSE_DONE == b"data: [DONE]\n\n"
    assert events.SSE_PING.startswith(b":") and events.SSE_PING.endswith(b"\n\n")


def test_a_bundle_carries_its_frames_in_order() -> None:
    """A bundle gives back each frame, in order, payload newlines and empty frames included; a plain frame
    is a message of one frame."""
    frames = [
        events.encode(events.START, "a", 0, {"worker": "w"}),
        events.encode(events.CHUNKS, "b", 3, None, b"data: {}\n\n" * 3),
        b"",
        events.encode(events.DONE, "a", 1, {"usage": {}}, b"B" * 70_000),  # longer than 16 bits
    ]
    assert events.frames_of(events.bundle(frames)) == frames
    assert events.frames_of(frames[0]) == [frames[0]]


@pytest.mark.parametrize("cut", [2, 5, 9])
def test_a_truncated_bundle_raises_frame_error(cut: int) -> None:
    """A bundle cut short is a FrameError, not a shorter list of frames."""
    message = events.bundle([b"Sa\n0\n\n", b"Cb\n1\n\nxyz"])
    with pytest.raises(events.FrameError):
        events.frames_of(message[:-cut])


def test_which_reply_channels_take_bundles() -> None:
    """An ingress' reply channel and the batch lines' take bundles; an older ingress' does not."""
    from shared import keys

    assert keys.takes_bundles(keys.reply_channel("i-1"))
    assert keys.takes_bundles(keys.BATCH_REPLY_CHANNEL)
    assert not keys.takes_bundles("aior:reply:i-1")
