"""What a subcommand raises to stop with one clear line on stderr instead of a traceback."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import redis


class CommandFailed(Exception):
    """A failure the user can act on; ``str()`` is the whole message."""

    def __init__(self, message: str, *, exit_status: int = 1) -> None:
        super().__init__(message)
        self.exit_status = exit_status


def redis_failure(url: str, exc: redis.RedisError) -> CommandFailed:
    """One line for a Redis error: unreachable (connection, timeout) or an error Redis answered."""
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return CommandFailed(f"cannot reach Redis at {printable_url(url)}: {exc}")
    return CommandFailed(f"Redis at {printable_url(url)} answered an error: {exc}")


def printable_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, safe to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo = f"{parts.username or ''}:***@"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=userinfo + host))
