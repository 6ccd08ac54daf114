"""The request's `provider` routing preferences: parsed, validated with OpenAI-style errors, kept out of
the body that goes upstream."""

from __future__ import annotations

from typing import Any

import pytest

from ingress.provider_preferences import NO_PREFERENCES, ProviderPreferences, parse_provider_preferences
from ingress.validation import validate_chat_request
from shared.errors import InvalidRequest

MESSAGES = [{"role": "user", "content": "hi"}]


def test_absent_preferences_change_nothing() -> None:
    """No `provider` field: default preferences and the body exactly as sent."""
    body = {"model": "m", "messages": MESSAGES, "custom": 1}
    request = validate_chat_request(body)
    assert request.preferences == NO_PREFERENCES and request.body == body


def test_preferences_are_parsed_and_removed_from_the_body() -> None:
    """`provider` becomes the request's preferences (duplicates dropped) and leaves the upstream body."""
    body = {
        "model": "m",
        "messages": MESSAGES,
        "provider": {"order": ["b", "a", "b"], "allow_fallbacks": False},
    }
    request = validate_chat_request(body)
    assert request.preferences == ProviderPreferences(("b", "a"), allow_fallbacks=False)
    assert "provider" not in request.body and request.body["model"] == "m"


def test_null_members_mean_defaults() -> None:
    """null `order` and `allow_fallbacks` are "not set", as for every optional OpenAI parameter."""
    assert parse_provider_preferences({"order": None, "allow_fallbacks": None}) == NO_PREFERENCES


@pytest.mark.parametrize(
    ("value", "param", "code"),
    [
        ("fast", "provider", "invalid_type"),
        ({"order": "a"}, "provider.order", "invalid_type"),
        ({"order": ["a", 3]}, "provider.order", "invalid_type"),
        ({"order": [""]}, "provider.order", "invalid_type"),
        ({"order": ["p"] * 33}, "provider.order", "array_above_max_length"),
        ({"allow_fallbacks": "no"}, "provider.allow_fallbacks", "invalid_type"),
        ({"sort": "price"}, "provider.sort", "unsupported_parameter"),
    ],
)
def test_bad_preferences_are_400_naming_the_field(value: Any, param: str, code: str) -> None:
    """Each malformed preference is a 400 invalid_request whose param and code say what is wrong."""
    with pytest.raises(InvalidRequest) as caught:
        validate_chat_request({"model": "m", "messages": MESSAGES, "provider": value})
    assert (caught.value.param, caught.value.code, caught.value.status) == (param, code, 400)
