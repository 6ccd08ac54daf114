"""The batch driver's rounds follow each other at once only while a lane runs low; otherwise they wait
``poll_interval``, since a lane holds a window of lines for that long."""

from __future__ import annotations

from ingress.batches.driver import BUSY_PAUSE, pause_after


def test_a_round_that_refilled_little_waits_the_poll_interval() -> None:
    """A round that put a few lines into a lane holding most of its window waits a whole interval."""
    assert pause_after({"sim": 1}, window=128, poll_interval=0.2) == 0.2
    assert pause_after({"sim": 63, "other": 10}, window=128, poll_interval=0.2) == 0.2


def test_a_round_that_fed_nothing_waits_the_poll_interval() -> None:
    """No line fed (nothing to run, or every lane full): the next round comes after the interval."""
    assert pause_after({}, window=128, poll_interval=0.05) == 0.05


def test_a_round_that_refilled_half_a_window_is_followed_at_once() -> None:
    """A lane that drained half its window since the last round gets the next round at once."""
    assert pause_after({"sim": 64}, window=128, poll_interval=0.2) == BUSY_PAUSE
    assert pause_after({"sim": 1, "other": 2}, window=4, poll_interval=0.2) == BUSY_PAUSE
