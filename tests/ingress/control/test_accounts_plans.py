"""Plans in the settings: the defaults, `[plans.NAME]` tables in TOML, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import ConfigError
from shared.settings import Plan, Settings, load_settings, settings_from_mapping


def test_default_plans_match_the_api_reference() -> None:
    """Without configuration: unverified 10, developer 60, business 300 requests per minute."""
    plans = Settings().plans
    assert {name: p.requests_per_minute for name, p in plans.items()} == {
        "unverified": 10,
        "developer": 60,
        "business": 300,
    }
    assert all(p.tokens_per_minute == 0 for p in plans.values())
    assert Settings().default_plan == "unverified"


def test_toml_plan_tables_override_and_add(tmp_path: Path) -> None:
    """A `[plans.NAME]` table changes one field of a default plan, or adds a new plan."""
    config = tmp_path / "aiorouter.toml"
    config.write_text(
        'default_plan = "developer"\n'
        "[plans.developer]\ntokens_per_minute = 50000\n"
        "[plans.enterprise]\nrequests_per_minute = 3000\ntokens_per_minute = 2000000\n"
    )
    settings = load_settings(config, env={})
    assert settings.plans["developer"] == Plan("developer", requests_per_minute=60, tokens_per_minute=50_000)
    assert settings.plans["enterprise"] == Plan("enterprise", 3000, 2_000_000)
    assert settings.plans["business"].requests_per_minute == 300
    assert settings.default_plan == "developer"


@pytest.mark.parametrize(
    "raw",
    [
        {"plans": {"free": {}}},
        {"plans": {"free": {"requests_per_minute": 0}}},
        {"plans": {"developer": {"requests_per_minute": -1}}},
        {"plans": {"developer": {"requests_per_minute": "60"}}},
        {"plans": {"developer": {"tokens_per_minute": -5}}},
        {"plans": {"developer": {"requests_per_minute": True}}},
        {"plans": {"developer": {"rpm": 60}}},
        {"default_plan": "gold"},
    ],
)
def test_bad_plans_are_refused_at_start_up(raw: dict[str, object]) -> None:
    """Missing or non-positive limits, wrong types, unknown fields, an undefined default plan: all fail."""
    with pytest.raises(ConfigError):
        settings_from_mapping(raw, env={})
