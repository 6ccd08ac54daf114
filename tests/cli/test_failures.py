"""The helpers that turn failures into one printable line."""

from __future__ import annotations

from cli.failures import printable_url


def test_password_is_masked() -> None:
    """A Redis URL's password never reaches the terminal."""
    assert printable_url("redis://:s3cret@redis.internal:6379/0") == "redis://:***@redis.internal:6379/0"
    assert printable_url("rediss://app:s3cret@host/1") == "rediss://app:***@host/1"


def test_url_without_password_is_unchanged() -> None:
    """URLs without credentials are printed as given."""
    assert printable_url("redis://127.0.0.1:6379/3") == "redis://127.0.0.1:6379/3"
