"""Query parameters of the admin API and the Dashboard, read strictly: ASCII digits, bounded, or a 400.

``int("١٢")`` and ``"²".isdigit()`` are both true in Python; an HTTP API should not find out what else
they let through at run time.
"""

from __future__ import annotations

import re
from datetime import date

from starlette.requests import Request

from shared import usage
from shared.errors import InvalidRequest

_INTEGER = re.compile(r"-?[0-9]{1,18}")


def int_query(request: Request, name: str, *, default: int, low: int, high: int) -> int:
    """The integer query parameter ``name`` from ``low`` to ``high``, ``default`` when absent."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not _INTEGER.fullmatch(raw):
        raise InvalidRequest(f"{name!r} must be an integer from {low} to {high}.", param=name)
    value = int(raw)
    if not low <= value <= high:
        raise InvalidRequest(f"{name!r} must be an integer from {low} to {high}.", param=name)
    return value


def date_query(request: Request, name: str) -> date | None:
    """The UTC day query parameter ``name`` (``YYYY-MM-DD``, from 1970-01-01), None when absent."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return usage.parse_day(raw)
    except ValueError as exc:
        raise InvalidRequest(
            f"{name!r} must be a date written YYYY-MM-DD, from {usage.FIRST_DAY.isoformat()} on.", param=name
        ) from exc
