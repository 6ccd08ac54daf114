"""How an upstream's error status becomes ours: its Retry-After, passed on only as whole seconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from shared.errors import UpstreamUnavailable
from workers.providers.upstream_call import MAX_RETRY_AFTER, retry_after_seconds, status_error


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("5", 5),
        ("0.2", 1),
        ("-5", 0),
        ("1000000000000", MAX_RETRY_AFTER),
        ("inf", MAX_RETRY_AFTER),
        ("1e400", MAX_RETRY_AFTER),
        ("soon, maybe", None),
        ("nan", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_whole_seconds_within_a_day(value: str | None, seconds: int | None) -> None:
    """A number of seconds is rounded up and kept within [0, a day]; anything else is not passed on."""
    assert retry_after_seconds(value) == seconds


def test_retry_after_as_an_http_date_is_the_seconds_until_then() -> None:
    """The other form HTTP allows, a date, counts from now (a past one is 0)."""
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    assert 115 <= (retry_after_seconds(soon) or 0) <= 121
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0


def test_an_unavailable_upstream_passes_on_a_clean_retry_after_or_none() -> None:
    """A 429 or 503 carries the upstream's wait as whole seconds; a garbled one is dropped, not relayed."""
    kept = status_error("p", 429, {"retry-after": "1000000000000"}, b"")
    assert isinstance(kept, UpstreamUnavailable) and kept.headers == {"Retry-After": str(MAX_RETRY_AFTER)}
    dropped = status_error("p", 503, {"retry-after": "soon, maybe"}, b"")
    assert isinstance(dropped, UpstreamUnavailable) and "Retry-After" not in (dropped.headers or {})
