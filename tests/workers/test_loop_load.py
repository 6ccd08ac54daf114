"""The loop lag measure and the loop guard that stops a worker dequeuing while its loop is saturated."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.waiting import eventually
from workers.loop_load import PEAK_FADE, RECOVERY, LoopGuard, LoopLag


def test_lag_is_smoothed_and_never_negative() -> None:
    """Each sample moves the lag by the smoothing share of the difference; an early timer counts as 0."""
    lag = LoopLag(smoothing=0.5)
    assert lag.record(0.1) == pytest.approx(0.05)
    assert lag.record(0.1) == pytest.approx(0.075)
    assert lag.record(-0.01) == pytest.approx(0.0375)


def test_peak_holds_the_slowest_recent_sample_and_fades() -> None:
    """One late sample sets the peak at once, and later on-time samples fade it by PEAK_FADE a tick."""
    lag = LoopLag(smoothing=0.5)
    lag.record(0.02)
    assert lag.peak == pytest.approx(0.02)
    lag.record(0.0)
    lag.record(0.0)
    assert lag.peak == pytest.approx(0.02 * PEAK_FADE**2)
    lag.record(0.001)
    assert lag.peak == pytest.approx(max(0.001, 0.02 * PEAK_FADE**3))


async def test_lag_rises_when_a_callback_blocks_the_loop() -> None:
    """A callback that holds the loop for 0.3 s shows in the lag once the timer runs again."""
    lag = LoopLag(tick=0.01)
    lag.start()
    try:
        asyncio.get_running_loop().call_soon(time.sleep, 0.3)
        await eventually(lambda: lag.lag > 0.05)
    finally:
        lag.stop()


def test_guard_stops_at_the_threshold_and_resumes_below_its_recovery_share() -> None:
    """Admission stops when the lag reaches the threshold and comes back only below RECOVERY of it."""
    guard = LoopGuard(saturated_lag=0.2)
    assert guard.admits(0.1)
    assert not guard.admits(0.2)
    assert not guard.admits(0.2 * RECOVERY + 0.01)  # recovering, not yet recovered
    assert guard.admits(0.2 * RECOVERY - 0.01)
    assert guard.admits(0.15)  # below the threshold again: admitted


def test_guard_off_always_admits() -> None:
    """A threshold of 0 turns the guard off."""
    assert LoopGuard(saturated_lag=0).admits(10.0)
