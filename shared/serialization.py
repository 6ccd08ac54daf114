"""orjson on the wire and in Redis; the rq serializer built on it (never pickle); what a job
record keeps of its call."""

from __future__ import annotations

import zlib
from typing import Any

import orjson

dumps = orjson.dumps
loads = orjson.loads


class OrjsonSerializer:
    """rq serializer: rq stores ``(func_name, instance, args, kwargs)``; orjson turns the tuple into a
    list, which rq unpacks the same way."""

    @staticmethod
    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    @staticmethod
    def loads(data: bytes | str) -> Any:
        return orjson.loads(data)


def stored_call(call: bytes) -> bytes:
    """What a job record's ``data`` field keeps of ``call`` (a serialized rq call): rq reads it with
    ``zlib.decompress``, falling back to the bytes as they are when they are no zlib stream.

    rq writes ``zlib.compress(call)``: level 6 and zlib's largest tables (a 32 KiB window, 256 KiB in
    all), whose set-up on a busy process's cold caches costs more than a request's whole admission.  A
    call under :data:`STORED_RAW_BELOW` bytes is kept as it is (a JSON list never reads as a zlib
    header); a longer one is compressed at level 1 with a window just large enough to reach back over
    the whole call (deflate keeps 262 bytes of look-ahead out of it) and a hash table sized to match:
    up to about a tenth larger than rq's, at half its cost or less, for a record that lives only until
    a worker loads the job.  A zlib stream names its window in its header; ``zlib.decompress`` reads
    every size.
    """
    if len(call) < STORED_RAW_BELOW:
        return call
    bits = max(_MIN_WINDOW_BITS, min(zlib.MAX_WBITS, (len(call) + _LOOKAHEAD).bit_length()))
    compressor = zlib.compressobj(1, zlib.DEFLATED, bits, min(zlib.DEF_MEM_LEVEL, bits - 6))
    return compressor.compress(call) + compressor.flush()


STORED_RAW_BELOW = 1024
"""Calls shorter than this (bytes) are stored uncompressed: what compression would save is smaller than
what the job's other fields take."""

_MIN_WINDOW_BITS = 9  # zlib's smallest window for a zlib (not raw) stream
_LOOKAHEAD = 262  # deflate's MIN_LOOKAHEAD: the part of the window a match cannot reach
