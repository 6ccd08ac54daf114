"""A worker's slots fit its open-file limit: the soft limit is raised toward the hard one first."""

from __future__ import annotations

import resource

import pytest

from workers.open_files import FILES_BESIDES_JOBS, slots_within_open_files


def _limits(monkeypatch: pytest.MonkeyPatch, soft: int, hard: int) -> list[tuple[int, int]]:
    current = [(soft, hard)]
    monkeypatch.setattr(resource, "getrlimit", lambda _: current[-1])
    monkeypatch.setattr(resource, "setrlimit", lambda _, limits: current.append(limits))
    return current


def test_the_soft_limit_is_raised_to_fit_the_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a hard limit high enough, the soft limit rises and every slot is kept."""
    current = _limits(monkeypatch, soft=1024, hard=65536)
    assert slots_within_open_files(4096) == 4096
    assert current[-1] == (4096 + FILES_BESIDES_JOBS, 65536)


def test_slots_shrink_to_a_low_hard_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hard limit below what the slots need lowers the slots to what it leaves."""
    _limits(monkeypatch, soft=1024, hard=2048)
    assert slots_within_open_files(4096) == 2048 - FILES_BESIDES_JOBS


def test_slots_that_fit_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker whose slots fit its soft limit changes nothing."""
    current = _limits(monkeypatch, soft=20000, hard=20000)
    assert slots_within_open_files(4096) == 4096
    assert current == [(20000, 20000)]
