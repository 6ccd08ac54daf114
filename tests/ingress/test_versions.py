"""The API-Version header: default, unknown, malformed, deprecated (Sunset + warning), sunset (410)."""

from __future__ import annotations

from datetime import date

import pytest

from ingress.versions import VersionRegistry, http_date
from shared.errors import ApiVersionGone, UnsupportedApiVersion
from shared.settings import ApiVersion
from tests.ingress.conftest import IngressFactory
from tests.ingress.test_app import assert_error

CURRENT = "2026-06-01"
REGISTRY = VersionRegistry(
    {
        CURRENT: ApiVersion(CURRENT),
        "2025-01-01": ApiVersion("2025-01-01", "deprecated", date(2026, 1, 1), date(2026, 12, 1)),
        "2024-01-01": ApiVersion("2024-01-01", "deprecated", date(2025, 1, 1)),
    },
    CURRENT,
)
VERSIONS = [
    {"version": "2025-01-01", "status": "deprecated", "deprecated_on": "2026-01-01", "sunset": "2099-12-01"},
    {"version": "2024-01-01", "status": "deprecated", "deprecated_on": "2024-06-01", "sunset": "2025-01-01"},
]


def test_absent_header_uses_the_default() -> None:
    """No API-Version means the default version, with only the API-Version response header."""
    resolved = REGISTRY.resolve(None)
    assert resolved.version == CURRENT
    assert resolved.headers == ((b"api-version", CURRENT.encode()),)


ARABIC_INDIC_DATE = "\u0662\u0660\u0662\u0666-\u0660\u0666-\u0660\u0661"  # 2026-06-01 in other digits


@pytest.mark.parametrize(
    "value",
    ["2026-6-1", "latest", "2026-06-01x", "", ARABIC_INDIC_DATE, f"{CURRENT}\u3000", f"{CURRENT}\n"],
)
def test_malformed_version_is_refused(value: str) -> None:
    """A version that is not YYYY-MM-DD (ASCII digits; only spaces and tabs trimmed) is 400
    unsupported_api_version naming the header."""
    with pytest.raises(UnsupportedApiVersion) as caught:
        REGISTRY.resolve(value)
    assert (caught.value.status, caught.value.param) == (400, "API-Version")


def test_unknown_version_lists_the_supported_ones() -> None:
    """A well-formed but unknown version is refused with the supported versions in the message."""
    with pytest.raises(UnsupportedApiVersion) as caught:
        REGISTRY.resolve("2030-01-01")
    assert CURRENT in caught.value.message


def test_deprecated_version_carries_sunset_and_warning() -> None:
    """A deprecated version resolves, with Sunset as an HTTP date and an API-Version-Warning."""
    headers = dict(REGISTRY.resolve("2025-01-01", today=date(2026, 6, 1)).headers)
    assert headers[b"api-version"] == b"2025-01-01"
    assert headers[b"sunset"] == b"Tue, 01 Dec 2026 00:00:00 GMT"
    assert b"deprecated" in headers[b"api-version-warning"]
    assert headers[b"deprecation"] == b"@1767225600"  # 2026-01-01T00:00:00Z


def test_version_past_sunset_is_gone() -> None:
    """On and after its sunset date a deprecated version is 410 api_version_sunset."""
    with pytest.raises(ApiVersionGone) as caught:
        REGISTRY.resolve("2025-01-01", today=date(2026, 12, 1))
    assert (caught.value.status, caught.value.code) == (410, "api_version_sunset")


def test_deprecated_version_without_sunset_has_only_the_warning() -> None:
    """A deprecated version with no sunset date warns but sends no Sunset header."""
    headers = dict(REGISTRY.resolve("2024-01-01").headers)
    assert b"sunset" not in headers and b"api-version-warning" in headers


def test_http_date_format() -> None:
    """Sunset dates are IMF-fixdate strings (RFC 9110), midnight UTC."""
    assert http_date(date(2027, 3, 5)) == "Fri, 05 Mar 2027 00:00:00 GMT"


async def test_app_deprecated_version_headers(ingress_factory: IngressFactory) -> None:
    """Through the app, a deprecated version configured in settings answers with Sunset and the warning."""
    async with ingress_factory(api_versions=VERSIONS) as ingress:
        response = await ingress.client.get(
            "/v1/models", headers=ingress.headers({"API-Version": "2025-01-01"})
        )
        assert response.status_code == 200
        assert response.headers["api-version"] == "2025-01-01"
        assert response.headers["sunset"] == "Tue, 01 Dec 2099 00:00:00 GMT"
        assert "2026-06-01" in response.headers["api-version-warning"]


async def test_app_deprecated_version_headers_on_errors(ingress_factory: IngressFactory) -> None:
    """The version headers ride on error responses too."""
    async with ingress_factory(api_versions=VERSIONS) as ingress:
        response = await ingress.client.get("/nope", headers={"API-Version": "2025-01-01"})
        assert response.status_code == 404
        assert "sunset" in response.headers and "api-version-warning" in response.headers


async def test_app_sunset_version_is_410(ingress_factory: IngressFactory) -> None:
    """A version past its sunset is a 410 envelope, before authentication."""
    async with ingress_factory(api_versions=VERSIONS) as ingress:
        response = await ingress.client.post("/v1/chat/completions", headers={"API-Version": "2024-01-01"})
        assert_error(response, 410, "invalid_request", "api_version_sunset", "API-Version")
        assert response.headers["api-version"] == CURRENT


async def test_app_unknown_version_is_400(ingress_factory: IngressFactory) -> None:
    """An unknown version is 400 unsupported_api_version; the response names the default version."""
    async with ingress_factory() as ingress:
        response = await ingress.chat(headers={"API-Version": "1999-01-01", "X-Request-Id": "v1"})
        assert_error(response, 400, "invalid_request", "unsupported_api_version", "API-Version")
        assert response.headers["api-version"] == CURRENT
        assert response.headers["x-request-id"] == "v1"


async def test_app_malformed_non_ascii_version_is_shown_as_sent(ingress_factory: IngressFactory) -> None:
    """A malformed version in UTF-8 is quoted in the error as the client wrote it, not Latin-1 mojibake."""
    async with ingress_factory() as ingress:
        response = await ingress.chat(headers={"API-Version": "2025-été".encode()})
        assert_error(response, 400, "invalid_request", "unsupported_api_version", "API-Version")
        assert "'2025-été'" in response.json()["error"]["message"]
