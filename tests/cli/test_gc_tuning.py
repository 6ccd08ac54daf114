"""The server processes' garbage-collector setting (cli.gc_tuning)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from cli.gc_tuning import tune_collector
from shared.errors import ConfigError
from shared.settings import settings_from_mapping


@pytest.fixture
def collector() -> Iterator[None]:
    """Give the test process its collector back as it was."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_tuning_freezes_what_exists_and_sets_the_young_threshold(collector: None) -> None:
    """Objects alive at tuning are frozen out of collections; the youngest generation is collected every
    ``young_threshold`` allocations, the older ones keep Python's ratios."""
    _, middle, oldest = gc.get_threshold()
    tune_collector(12_345)
    assert gc.get_threshold() == (12_345, middle, oldest)
    assert gc.get_freeze_count() > 0


def test_zero_leaves_the_collector_alone(collector: None) -> None:
    before = gc.get_threshold()
    tune_collector(0)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_a_negative_threshold_is_refused() -> None:
    with pytest.raises(ConfigError, match="gc_young_threshold"):
        settings_from_mapping({"gc_young_threshold": -1})
