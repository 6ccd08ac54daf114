"""The Batch API benchmark's input file is what the Batch API accepts."""

from __future__ import annotations

import orjson

from bench.batch_bench import MODEL, batch_input


def test_batch_input_is_one_chat_line_per_custom_id() -> None:
    """Each line is an OpenAI batch input line for the benchmark model, custom ids distinct."""
    lines = [orjson.loads(line) for line in batch_input(5).splitlines()]
    assert [line["custom_id"] for line in lines] == [f"line-{n}" for n in range(5)]
    assert all(line["method"] == "POST" and line["url"] == "/v1/chat/completions" for line in lines)
    assert all(line["body"]["model"] == MODEL for line in lines)
