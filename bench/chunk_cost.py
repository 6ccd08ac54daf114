"""CPU per relayed chunk on the worker: an upstream ``chat.completion.chunk`` event taken out of the SSE
body (one event a piece, as upstreams send them), parsed by the OpenAI adapter and written as the caller's
SSE event, in process, no I/O.  The end-to-end suite (``bench.run``) measures
what a chunk costs across every process; this isolates the worker's own share, so a change to parsing or
chunk writing can be compared with the code before it in one quiet run.

    .venv/bin/python -m bench.chunk_cost [--chunks 200000] [--repeat 5]

Prints the best of ``--repeat`` runs, in microseconds of CPU per chunk, for a plain content chunk (what
nearly every chunk is) and for one carrying every optional field (``bench.sim_full``).
"""

from __future__ import annotations

import argparse
import time

import orjson

from bench.sim_full import FullChunkWriter
from shared.jobs import CompletionJob
from workers.chunks import ChunkWriter
from workers.providers.openai_compatible import _parse_chunk
from workers.providers.sse import SSEDecoder

PLAIN = orjson.dumps(
    {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": {"content": "w7 "}, "logprobs": None, "finish_reason": None}],
    }
)


def _full_chunk() -> bytes:
    event = FullChunkWriter("m", False, 1, 4).content(1)
    return event.removeprefix(b"data: ").rstrip(b"\n")


def per_chunk_us(data: bytes, chunks: int) -> float:
    job = CompletionJob("r", "c", "m", "p", "m", True, False, {"messages": []}, 1)
    writer = ChunkWriter(job)
    for delta in _parse_chunk("p", data):  # the first chunk carries the role: take it out of the loop
        writer.sse(delta)
    event = b"data: " + data + b"\n\n"
    decoder = SSEDecoder(stream_limit=(chunks + 1) * len(event))
    started = time.process_time()
    for _ in range(chunks):
        for payload in decoder.feed(event):
            for delta in _parse_chunk("p", payload):
                writer.sse(delta)
    return (time.process_time() - started) / chunks * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    full = _full_chunk()
    for name, data in (("plain content chunk", PLAIN), ("every optional field", full)):
        best = min(per_chunk_us(data, args.chunks) for _ in range(args.repeat))
        print(f"{name}: {best:.2f} us CPU per chunk (best of {args.repeat} x {args.chunks})")


if __name__ == "__main__":
    main()
