"""The orjson rq serializer, and what a job record keeps of its call."""

from __future__ import annotations

import random
import zlib
from typing import Any

import fakeredis
import orjson
import pytest
from rq.job import Job

from shared.jobs import JOB_FUNC
from shared.serialization import STORED_RAW_BELOW, OrjsonSerializer, stored_call


def test_rq_payload_round_trip() -> None:
    """rq's (func, instance, args, kwargs) tuple comes back as a list rq unpacks the same way."""
    payload = ("workers.completion.run_completion", None, ({"request_id": "r", "body": {"n": 1}},), {})
    data = OrjsonSerializer.dumps(payload)
    assert isinstance(data, bytes) and not data.startswith(b"\x80")  # JSON, never pickle
    func, instance, args, kwargs = OrjsonSerializer.loads(data)
    assert (func, instance, args, kwargs) == (payload[0], None, [payload[2][0]], {})


def _restored_args(stored: bytes) -> Any:
    """The args rq's own ``Job.restore`` reads from a record whose ``data`` is ``stored``."""
    job = Job("restored", connection=fakeredis.FakeRedis(), serializer=OrjsonSerializer)
    job.restore({b"data": stored})
    return job.args


def test_a_short_call_is_stored_as_it_is_and_rq_reads_it() -> None:
    """Under the threshold the call's bytes are the field (a JSON list is never a zlib header, so rq's
    decompress fails and it takes the bytes as they are); at it, the field is compressed."""
    call = OrjsonSerializer.dumps((JOB_FUNC, None, ({"request_id": "r", "body": {"n": 1}},), {}))
    assert stored_call(call) == call
    with pytest.raises(zlib.error):
        zlib.decompress(call)
    assert _restored_args(stored_call(call)) == [{"request_id": "r", "body": {"n": 1}}]
    padded = OrjsonSerializer.dumps((JOB_FUNC, None, ({"pad": "x" * STORED_RAW_BELOW},), {}))
    assert len(stored_call(padded)) < len(padded)
    assert _restored_args(stored_call(padded)) == [{"pad": "x" * STORED_RAW_BELOW}]


@pytest.mark.parametrize("size", [STORED_RAW_BELOW, 5_000, 16_122, 16_123, 40_000])
def test_a_long_call_is_compressed_over_its_whole_length_in_a_window_rq_reads(size: int) -> None:
    """rq's decompress reads the call back; repeats as far apart as the call allows (a third of it)
    still compress, so the window covers the call; it is never larger than rq's, and smaller than rq's
    while the call fits in 16 KiB less deflate's look-ahead."""
    block = bytes(random.Random(size).randrange(256) for _ in range(size // 3))
    call = (block * 4)[:size]
    stored = stored_call(call)
    assert zlib.decompress(stored) == call
    assert len(stored) < 0.45 * size
    window_bits = (stored[0] >> 4) + 8
    assert (window_bits < zlib.MAX_WBITS) == (size + 262 < 2**14)


def test_a_long_call_stays_close_to_rqs_size_on_a_prompt() -> None:
    """Level 1 and smaller tables cost a prompt-like call at most about a tenth more than rq's level 6."""
    rng = random.Random(7)
    words = ["".join(rng.choice("abcdefghijklmnop") for _ in range(rng.randint(2, 9))) for _ in range(2_000)]
    for size in (STORED_RAW_BELOW, 3_000, 30_000, 200_000):
        text = " ".join(rng.choice(words) for _ in range(size // 5))
        call = orjson.dumps({"messages": [{"role": "user", "content": text}]})[:size]
        stored = stored_call(call)
        assert zlib.decompress(stored) == call
        assert len(stored) <= 1.15 * len(zlib.compress(call)) + 8
