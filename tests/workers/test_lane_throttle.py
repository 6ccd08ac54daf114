"""The batch lane's limit while interactive jobs share the worker's loop: AIMD on the loop's lag."""

from __future__ import annotations

from workers.lane_throttle import STEP, LaneThrottle

LAGGING = 0.01
CALM = 0.0


def _throttle(full: int = 32, floor: int = 1, grace: float = 2.0) -> LaneThrottle:
    return LaneThrottle(full, yield_lag=0.002, floor=floor, interactive_grace=grace)


def test_without_interactive_jobs_the_lane_keeps_its_full_limit() -> None:
    """However much the loop lags, a lane with no interactive jobs about holds its full limit."""
    throttle = _throttle()
    assert [throttle.update(n * STEP, lag=LAGGING, interactive=False) for n in range(5)] == [32] * 5


def test_lag_halves_the_limit_once_a_step_down_to_the_floor() -> None:
    """With interactive jobs running and the loop lagging, the limit halves once a step down to the floor."""
    throttle = _throttle()
    limits = []
    for n in range(8):
        limits.append(throttle.update(n * STEP, lag=LAGGING, interactive=True))
        limits.append(throttle.update(n * STEP + STEP / 2, lag=LAGGING, interactive=True))  # same step
    assert limits == [16, 16, 8, 8, 4, 4, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1]


def test_a_calm_loop_grows_the_limit_by_one_line_a_step() -> None:
    """Once the lag is below the threshold again, the limit grows additively, up to the full limit."""
    throttle = _throttle(full=4)
    for n in range(3):
        throttle.update(n * STEP, lag=LAGGING, interactive=True)
    assert throttle.limit == 1
    grown = [throttle.update((3 + n) * STEP, lag=CALM, interactive=True) for n in range(5)]
    assert grown == [2, 3, 4, 4, 4]


def test_the_full_limit_returns_once_interactive_jobs_are_gone_for_the_grace() -> None:
    """Interactive jobs seen within the grace keep the lane yielding; after it, the full limit is back."""
    throttle = _throttle(grace=2.0)
    throttle.update(0.0, lag=LAGGING, interactive=True)
    throttle.update(1.0, lag=LAGGING, interactive=False)
    assert throttle.update(2.0, lag=LAGGING, interactive=False) == 4
    assert throttle.update(2.1, lag=LAGGING, interactive=False) == 32


def test_a_zero_floor_stops_new_lines_and_a_zero_threshold_never_yields() -> None:
    """Floor 0 lets the limit reach 0 lines; yield_lag 0 turns the throttle off."""
    stopping = _throttle(full=2, floor=0)
    assert [stopping.update(n * STEP, lag=LAGGING, interactive=True) for n in range(3)] == [1, 0, 0]
    off = LaneThrottle(8, yield_lag=0, floor=1, interactive_grace=2.0)
    assert off.update(0.0, lag=LAGGING, interactive=True) == 8


def test_the_throttle_says_when_the_lane_yields() -> None:
    """`yielding` is true from an interactive job until the grace has passed, and never with yield_lag 0."""
    throttle = _throttle(grace=2.0)
    throttle.update(0.0, lag=CALM, interactive=False)
    assert not throttle.yielding
    throttle.update(0.5, lag=CALM, interactive=True)
    assert throttle.yielding
    throttle.update(2.5, lag=CALM, interactive=False)
    assert throttle.yielding
    throttle.update(2.6, lag=CALM, interactive=False)
    assert not throttle.yielding
    off = LaneThrottle(8, yield_lag=0, floor=1, interactive_grace=2.0)
    off.update(0.0, lag=LAGGING, interactive=True)
    assert not off.yielding
