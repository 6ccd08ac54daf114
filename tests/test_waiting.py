"""The one way tests wait for something: a condition polled against a deadline."""

from __future__ import annotations

import asyncio

import pytest

from tests.waiting import eventually, eventually_sync


async def test_eventually_returns_the_first_truthy_value_of_a_plain_or_async_condition() -> None:
    """A plain and a coroutine condition are both polled until they return something truthy, which is
    returned."""
    calls: list[int] = []

    def plain() -> int | None:
        calls.append(1)
        return len(calls) if len(calls) >= 3 else None

    async def later() -> str:
        await asyncio.sleep(0)
        return "yes" if len(calls) >= 3 else ""

    assert await eventually(plain) == 3
    assert await eventually(later) == "yes"


async def test_eventually_fails_naming_the_condition_that_never_held() -> None:
    """A condition still false at the deadline fails the test with its source line."""
    with pytest.raises(AssertionError, match="never_true"):
        await eventually(lambda: "never_true" == "", within=0.1)


def test_eventually_sync_polls_in_a_synchronous_test() -> None:
    """The synchronous variant returns the first truthy value, and fails at the deadline otherwise."""
    values = iter([0, 0, 7])
    assert eventually_sync(lambda: next(values)) == 7
    with pytest.raises(AssertionError, match=r"not reached within 0\.1 s"):
        eventually_sync(lambda: False, within=0.1)
