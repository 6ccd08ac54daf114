"""OpenRouter-style per-request provider preferences: ``"provider": {"order": [...], "allow_fallbacks": b}``.

``order`` names providers (the catalog's provider names) to try first, in that order; the model's other
deployments follow in the routing strategy's order unless ``allow_fallbacks`` is false.  The field is ours:
it is taken out of the body before the body goes upstream.  Other OpenRouter keys are refused (400) rather
than silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from shared.errors import InvalidRequest
from shared.settings import ModelEntry

FIELD: Final = "provider"
_KEYS: Final = frozenset({"order", "allow_fallbacks"})
_MAX_ORDER: Final = 32


@dataclass(frozen=True, slots=True)
class ProviderPreferences:
    order: tuple[str, ...] = ()
    allow_fallbacks: bool = True


NO_PREFERENCES: Final = ProviderPreferences()


def parse_provider_preferences(value: Any) -> ProviderPreferences:
    """The preferences of a request's ``provider`` field (None: none); 400 naming the bad field."""
    if value is None:
        return NO_PREFERENCES
    if not isinstance(value, dict):
        raise _invalid(FIELD, "Invalid type for 'provider': expected an object.", "invalid_type")
    unknown = sorted(set(value) - _KEYS)
    if unknown:
        raise _invalid(
            f"{FIELD}.{unknown[0]}",
            f"Unsupported provider preference '{unknown[0]}': use 'order' and 'allow_fallbacks'.",
            "unsupported_parameter",
        )
    order = value.get("order")
    if order is None:
        order = []
    if not isinstance(order, list) or not all(isinstance(name, str) and name for name in order):
        raise _invalid(
            f"{FIELD}.order",
            "Invalid type for 'provider.order': expected an array of provider names.",
            "invalid_type",
        )
    if len(order) > _MAX_ORDER:
        raise _invalid(
            f"{FIELD}.order",
            f"Invalid 'provider.order': at most {_MAX_ORDER} providers.",
            "array_above_max_length",
        )
    allow_fallbacks = value.get("allow_fallbacks")
    if allow_fallbacks is None:
        allow_fallbacks = True
    if not isinstance(allow_fallbacks, bool):
        raise _invalid(
            f"{FIELD}.allow_fallbacks",
            "Invalid type for 'provider.allow_fallbacks': expected a boolean.",
            "invalid_type",
        )
    return ProviderPreferences(tuple(dict.fromkeys(order)), allow_fallbacks)


def check_served(entry: ModelEntry, preferences: ProviderPreferences) -> None:
    """400 when ``preferences`` allow no deployment of ``entry``: an ``order`` naming none of its providers,
    with ``allow_fallbacks`` false."""
    if preferences.allow_fallbacks or not preferences.order:
        return
    serving = {d.provider for d in entry.deployments}
    if not serving.intersection(preferences.order):
        raise _invalid(
            f"{FIELD}.order",
            f"None of the providers in 'provider.order' serve the model '{entry.id}' "
            f"(it is served by: {', '.join(sorted(serving))}).",
            "invalid_value",
        )


def _invalid(param: str, message: str, code: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)
