"""The frames a worker publishes for a request, and their byte codec.

Every ingress process subscribes once, at start-up, to its own reply channel
(:func:`shared.keys.reply_channel`); each job names that channel, and the worker publishes every event of
the job there.  A frame is::

    <kind:1 byte><request_id> "\\n" <seq> "\\n" <meta JSON or empty> "\\n" <payload bytes>

Kinds, in the order a job emits them:

``S`` start   meta ``{"provider", "worker", "upstream_model", "prep_ms", "held_ms"}``; payload empty.  The job
              left the queue (``prep_ms``: the worker's time from taking it to calling the upstream;
              ``held_ms``: how long the frame then waited for content to travel with, if it did).
``C`` chunks  meta empty; payload is ready-to-write SSE bytes (one or more ``data: {...}\\n\\n`` lines,
              coalesced).  Only for ``stream: true`` requests.
``D`` done    meta ``{"usage": {...}, "finish_reason": ...}``; payload is, for a stream, the last SSE bytes
              (ending with ``data: [DONE]\\n\\n``), else the whole ``chat.completion`` JSON body.
``E`` error   meta is :meth:`shared.errors.AIORouterError.to_event` plus ``retryable`` (true when no content
              was sent and the upstream failure may pass on another deployment); payload empty.  Final.

``seq`` counts a request's frames from 0; a worker never has two publishes of one request in flight,
so pub/sub keeps them in order and a gap means lost data.  Payload bytes pass through the ingress
untouched: chunk JSON is serialized once, in the worker.

A message is one frame, or a bundle of frames (of any requests on that channel, in the order they were
published)::

    B (<length of the frame: 4 bytes, big-endian><frame>)...

A worker bundles what it publishes on one channel in one round trip (:class:`workers.publish_batcher.
PublishBatcher`): one ``PUBLISH`` for Redis to run and fan out, one message for the ingress to read,
instead of one per frame.  It bundles only on channels whose name says their reader takes bundles
(:func:`shared.keys.takes_bundles`), so an ingress that predates bundles still gets single frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

START: Final = b"S"
CHUNKS: Final = b"C"
DONE: Final = b"D"
ERROR: Final = b"E"
FINAL_KINDS: Final = (DONE, ERROR)
KINDS: Final = (START, CHUNKS, DONE, ERROR)
BUNDLE: Final = b"B"  # a message of several frames
_LENGTH_BYTES: Final = 4


class FrameError(ValueError):
    """A published message that is not a frame (never expected: a bug or a foreign publisher)."""


@dataclass(slots=True)  # not frozen: the ingress builds one per frame; a frozen init costs 4x more
class Frame:
    kind: bytes
    request_id: str
    seq: int
    meta: dict[str, Any]
    payload: bytes

    @property
    def is_final(self) -> bool:
        return self.kind in FINAL_KINDS


def encode(
    kind: bytes, request_id: str, seq: int, meta: dict[str, Any] | None = None, payload: bytes = b""
) -> bytes:
    meta_bytes = orjson.dumps(meta) if meta else b""
    return b"".join((kind, request_id.encode(), b"\n", str(seq).encode(), b"\n", meta_bytes, b"\n", payload))


def decode(message: bytes) -> Frame:
    try:
        head, seq, meta, payload = message.split(b"\n", 3)
        kind = head[:1]
        if kind not in KINDS:
            raise FrameError(f"unknown frame kind {kind!r}")
        return Frame(
            kind=kind,
            request_id=head[1:].decode(),
            seq=int(seq),
            meta=orjson.loads(meta) if meta else {},
            payload=payload,
        )
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise FrameError(f"malformed frame: {message[:80]!r}") from exc


def bundle(frames: Sequence[bytes]) -> bytes:
    """One message carrying ``frames``, in order."""
    parts = [BUNDLE]
    for frame in frames:
        parts.append(len(frame).to_bytes(_LENGTH_BYTES, "big"))
        parts.append(frame)
    return b"".join(parts)


def frames_of(message: bytes) -> list[bytes]:
    """The frames a published message carries: a bundle's, in order, or the message itself."""
    if message[:1] != BUNDLE:
        return [message]
    frames = []
    at, end = 1, len(message)
    while at < end:
        length = int.from_bytes(message[at : at + _LENGTH_BYTES], "big")
        at += _LENGTH_BYTES
        if at + length > end:
            raise FrameError(f"truncated bundle: {message[:80]!r}")
        frames.append(message[at : at + length])
        at += length
    return frames


def sse_data(obj: Any) -> bytes:
    """One SSE event line for a JSON-serializable object: ``data: {...}\\n\\n``."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


SSE_DONE: Final = b"data: [DONE]\n\n"
SSE_PING: Final = b": ping\n\n"
