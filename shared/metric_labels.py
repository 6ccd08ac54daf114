"""Bounded label values for Prometheus metrics: a value from the configuration, else ``"other"``.

A label value that came from a request (a model id a client sent, an upstream's error code) would make a
new time series per distinct value; every label of AIOrouter's metrics goes through a :class:`LabelSet`
built from the settings, so the series a process exports are bounded by its configuration.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

OTHER: Final = "other"


class LabelSet:
    """The values a label may take; anything else is :data:`OTHER`."""

    __slots__ = ("_allowed",)

    def __init__(self, allowed: Iterable[str]) -> None:
        self._allowed = frozenset(allowed)

    def __call__(self, value: object) -> str:
        return value if isinstance(value, str) and value in self._allowed else OTHER

    @property
    def values(self) -> frozenset[str]:
        return self._allowed
