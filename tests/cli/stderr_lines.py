"""Reading a store command's stderr: its first line names the Redis it used, the rest is its own."""

from __future__ import annotations


def after_redis_line(err: str) -> str:
    """``err`` without its leading ``aiorouter CMD: using <redis> (<why>)`` line, which must be there."""
    first, _, rest = err.partition("\n")
    assert first.startswith("aiorouter ") and ": using redis://" in first, err
    return rest
