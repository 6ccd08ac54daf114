"""The ``API-Version`` header: which dated version a request uses, and the headers that go with it.

Absent → the default version.  Malformed (not ``YYYY-MM-DD``) or unknown → 400
``unsupported_api_version`` with ``param: "API-Version"``.  A deprecated version still works, but every
response carries ``API-Version-Warning``, ``Deprecation`` (RFC 9745, ``@<unix time>``) when its
deprecation date is known, and ``Sunset`` (an HTTP date, RFC 8594) when a sunset date is set.  From
its sunset date on, the version answers 410 ``api_version_sunset``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.utils import format_datetime

from shared.errors import ApiVersionGone, UnsupportedApiVersion
from shared.settings import ApiVersion

HEADER = "API-Version"
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$", re.ASCII)


@dataclass(frozen=True, slots=True)
class ResolvedVersion:
    version: str
    headers: tuple[tuple[bytes, bytes], ...]  # raw ASGI headers every response of this request carries


class VersionRegistry:
    def __init__(self, versions: Mapping[str, ApiVersion], default: str) -> None:
        self._versions = versions
        self.default = default
        self._default_headers = ((b"api-version", default.encode()),)

    @property
    def default_headers(self) -> tuple[tuple[bytes, bytes], ...]:
        """Headers for a response whose requested version was refused: the default version."""
        return self._default_headers

    def resolve(self, requested: str | None, today: date | None = None) -> ResolvedVersion:
        """The version a request uses; raises for a malformed, unknown or sunset version."""
        if requested is None:
            return ResolvedVersion(self.default, self._default_headers)
        requested = requested.strip(" \t")  # HTTP whitespace only
        if not _DATE_RE.match(requested):
            raise UnsupportedApiVersion(
                f"Malformed API-Version {requested[:40]!r}: expected a date such as {self.default}.",
                param=HEADER,
            )
        spec = self._versions.get(requested)
        if spec is None:
            supported = ", ".join(sorted(self._versions))
            raise UnsupportedApiVersion(
                f"Unsupported API-Version {requested!r}; supported versions: {supported}.", param=HEADER
            )
        headers: list[tuple[bytes, bytes]] = [(b"api-version", spec.version.encode())]
        if spec.status == "deprecated":
            today = today or datetime.now(UTC).date()
            if spec.sunset is not None and today >= spec.sunset:
                raise ApiVersionGone(
                    f"API-Version {spec.version} reached its sunset on {spec.sunset.isoformat()}; "
                    f"use {self.default}.",
                    param=HEADER,
                )
            headers.append((b"api-version-warning", _warning(spec, self.default).encode()))
            if spec.deprecated_on is not None:
                headers.append((b"deprecation", f"@{_midnight_utc(spec.deprecated_on)}".encode()))
            if spec.sunset is not None:
                headers.append((b"sunset", http_date(spec.sunset).encode()))
        return ResolvedVersion(spec.version, tuple(headers))


def http_date(day: date) -> str:
    """Midnight UTC of ``day`` as an HTTP date, e.g. ``Tue, 01 Dec 2026 00:00:00 GMT``."""
    return format_datetime(datetime(day.year, day.month, day.day, tzinfo=UTC), usegmt=True)


def _midnight_utc(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def _warning(spec: ApiVersion, current: str) -> str:
    removal = f" and will be removed on {spec.sunset.isoformat()}" if spec.sunset else ""
    return f"API version {spec.version} is deprecated{removal}; migrate to {current}."
