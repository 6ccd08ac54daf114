"""argparse types that refuse what a command could not use, as a usage error (exit status 2), before
anything runs: a port out of range, a page size Redis would refuse."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def int_in(low: int, high: int) -> Callable[[str], int]:
    """A type for an integer from ``low`` to ``high``, written in ASCII digits (and an optional sign)."""

    def parse(text: str) -> int:
        digits = text.removeprefix("-")
        if not (digits.isascii() and digits.isdigit()) or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from {low} to {high}")
        return int(text)

    parse.__name__ = "integer"  # argparse names the type in its message: "invalid integer value"
    return parse


PORT = int_in(0, 65535)
PAGE = int_in(1, 1000)
"""A listing's page size: at most what the admin API serves in one page."""
OFFSET = int_in(0, 10**9)
