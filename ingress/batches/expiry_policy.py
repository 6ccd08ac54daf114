"""OpenAI's file expiration policy: ``expires_after`` of an upload (``POST /v1/files``) and
``output_expires_after`` of a batch's output and error files (``POST /v1/batches``).

A policy is ``{"anchor": "created_at", "seconds": N}`` with N from :data:`MIN_SECONDS` (an hour) to
:data:`MAX_SECONDS` (30 days); anything else is a 400.  The file then expires N seconds after its
creation, or after ``BatchSettings.file_ttl`` if that is sooner: the operator's retention bounds every
file, and the ``expires_at`` of the ``File`` object says which applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from shared.errors import InvalidRequest

MIN_SECONDS: Final = 3600
MAX_SECONDS: Final = 30 * 86_400
ANCHORS: Final = ("created_at",)


def requested_seconds(policy: Any, *, param: str) -> int | None:
    """The seconds a policy asks a file to live (None: no policy), or :class:`InvalidRequest`.  Values
    may be strings of digits, as multipart form fields are."""
    if policy is None:
        return None
    if not isinstance(policy, Mapping):
        raise InvalidRequest(
            f"'{param}' must be an object with 'anchor' and 'seconds'.", param=param, code="invalid_type"
        )
    anchor, seconds = policy.get("anchor"), policy.get("seconds")
    for name, value in (("anchor", anchor), ("seconds", seconds)):
        if value is None:
            raise InvalidRequest(
                f"Missing required parameter: '{param}.{name}'.",
                param=f"{param}.{name}",
                code="missing_required_parameter",
            )
    if anchor not in ANCHORS:
        raise InvalidRequest(
            f"'{param}.anchor' must be 'created_at'.", param=f"{param}.anchor", code="invalid_value"
        )
    if isinstance(seconds, str) and seconds.isascii() and seconds.isdigit():
        # A number of more digits than the bound is out of range as it stands (and int() refuses
        # strings of thousands of digits): its length is enough to say so.
        digits = seconds.lstrip("0") or "0"
        seconds = int(digits) if len(digits) <= len(str(MAX_SECONDS)) else MAX_SECONDS + 1
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        raise InvalidRequest(
            f"'{param}.seconds' must be an integer.", param=f"{param}.seconds", code="invalid_type"
        )
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise InvalidRequest(
            f"'{param}.seconds' must be between {MIN_SECONDS} (1 hour) and {MAX_SECONDS} (30 days).",
            param=f"{param}.seconds",
            code="invalid_value",
        )
    return seconds


def file_lifetime(requested: int | None, file_ttl: int) -> int:
    """The seconds a file lives: what was asked, within the operator's ``file_ttl``."""
    return file_ttl if requested is None else min(requested, file_ttl)
