"""Settings: defaults, the TOML file, environment overrides, and clear errors for bad input."""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path

import pytest

from shared import ratelimit
from shared.errors import ConfigError
from shared.settings import (
    CURRENT_API_VERSION,
    DEADLINE_GRACE,
    MAX_PLAN_LIMIT,
    STALL_HEADROOM,
    load_settings,
    settings_from_mapping,
)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "aiorouter.toml"
    path.write_text(text)
    return path


def test_defaults_serve_the_simulated_models() -> None:
    """Without file or env: one simulated provider, the echo and lorem models, the current version."""
    settings = load_settings(env={})
    assert set(settings.providers) == {"simulated"} and settings.provider("simulated").kind == "simulated"
    assert set(settings.models) == {"aiorouter/echo", "aiorouter/lorem"}
    assert settings.default_api_version == CURRENT_API_VERSION in settings.api_versions
    assert settings.redis_url == "redis://127.0.0.1:6379/0" and settings.port == 8080


def test_settings_are_frozen() -> None:
    """Nobody can change settings after start-up."""
    settings = load_settings(env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]


def test_file_then_environment(tmp_path: Path) -> None:
    """The file overrides defaults, the environment overrides the file, coerced to the field type."""
    path = _write(tmp_path, 'redis_url = "redis://file:6379/1"\nport = 9000\nqueue_timeout = 3\n')
    from_file = load_settings(path, env={})
    assert (from_file.redis_url, from_file.port, from_file.queue_timeout) == (
        "redis://file:6379/1",
        9000,
        3.0,
    )
    from_env = load_settings(path, env={"REDIS_URL": "redis://env:6379/2", "AIOROUTER_PORT": "9100"})
    assert from_env.redis_url == "redis://env:6379/2" and from_env.port == 9100


def test_config_path_from_the_environment(tmp_path: Path) -> None:
    """AIOROUTER_CONFIG names the file when no path is passed."""
    path = _write(tmp_path, "port = 9200\n")
    assert load_settings(env={"AIOROUTER_CONFIG": str(path)}).port == 9200


def test_providers_models_and_versions(tmp_path: Path) -> None:
    """Provider tables, api_key_env, timeouts, both model forms and dated versions become typed values."""
    path = _write(
        tmp_path,
        """
[providers.up]
kind = "openai"
base_url = "http://127.0.0.1:1/v1"
api_key_env = "UP_KEY"
[providers.up.timeouts]
first_token = 7.5

[[models]]
id = "m1"
deployments = [{ provider = "up", upstream_model = "real-m1", weight = 2.0 }]
[[models]]
id = "m2"
provider = "up"

[[api_versions]]
version = "2026-01-01"
status = "deprecated"
deprecated_on = "2026-06-01"
sunset = "2027-01-01"
""",
    )
    settings = load_settings(path, env={"UP_KEY": "sk-up"})
    provider = settings.provider("up")
    assert (
        provider.api_key == "sk-up"
        and provider.timeouts.first_token == 7.5
        and provider.timeouts.connect == 5.0
    )
    assert "sk-up" not in repr(provider)
    assert settings.models["m1"].deployments[0].upstream_model == "real-m1"
    assert settings.models["m1"].deployments[0].weight == 2.0
    assert settings.models["m2"].deployments[0].upstream_model == "m2"  # shorthand defaults to the id
    old = settings.api_versions["2026-01-01"]
    assert old.status == "deprecated" and old.sunset == date(2027, 1, 1)


def test_the_plan_limit_bound_is_the_rate_limits_period() -> None:
    """The bound plans are checked against is the rate limit's minute in microseconds, and a plan at
    it loads (its token limit is then one token per microsecond)."""
    assert MAX_PLAN_LIMIT == ratelimit.PERIOD_US
    big = {"requests_per_minute": MAX_PLAN_LIMIT, "tokens_per_minute": MAX_PLAN_LIMIT}
    settings = settings_from_mapping({"plans": {"big": big}}, env={})
    assert settings.plans["big"].tokens_per_minute == MAX_PLAN_LIMIT


def test_connection_limits_table_is_read() -> None:
    """The [connections] table sets the ingress' connection limits; the others keep their defaults."""
    settings = settings_from_mapping({"connections": {"header_timeout": 2.5, "max_connections": 50}}, env={})
    assert (settings.connections.header_timeout, settings.connections.max_connections) == (2.5, 50)
    assert settings.connections.max_header_bytes == 64 * 1024


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"no_such_setting": 1}, "no_such_setting"),
        ({"port": "eighty"}, "port"),
        ({"providers": {}}, "no providers"),
        ({"providers": {"p": {"kind": "simulated", "colour": "blue"}}}, "p"),
        ({"providers": {"p": {"timeouts": {"forever": 1}}}}, "p"),
        ({"models": [{"id": "m", "provider": "nowhere"}]}, "nowhere"),
        ({"models": [{"id": "m"}]}, "no deployments"),
        ({"models": [{"id": "m", "deployments": [{"provider": "simulated"}]}]}, "m"),
        ({"api_versions": [{"version": "2026-01-01", "sunset": "someday"}]}, "2026-01-01"),
        ({"api_versions": [{"status": "deprecated"}]}, "version"),
        ({"default_api_version": "1999-01-01"}, "1999-01-01"),
        ({"connections": {"max_header_bytes": 0}}, "connections.max_header_bytes"),
        ({"connections": {"header_timeout": -1}}, "connections.header_timeout"),
        ({"connections": {"slowness": 1}}, "connections.slowness"),
        ({"stream_buffer_bytes": 0}, "stream_buffer_bytes"),
        ({"client_stall_timeout": -1}, "client_stall_timeout"),
        ({"reservation_lease": 2.0, "worker_heartbeat_interval": 1.0}, "reservation_lease"),
        ({"plans": {"big": {"requests_per_minute": 10, "tokens_per_minute": 60_000_001}}}, "big.*per minute"),
        ({"plans": {"big": {"requests_per_minute": 60_000_001}}}, "big.*tokens_per_minute = 0"),
        ({"batches": {"driver_lease": 0}}, "driver_lease"),
        ({"batches": {"driver_lease": 0.002}}, "driver_lease"),
        ({"batches": {"driver_lease": float("nan")}}, "driver_lease"),
        ({"batches": {"driver_lease": float("inf")}}, "driver_lease"),
        ({"batches": {"poll_interval": 0}}, "poll_interval"),
        # a table where an array of tables belongs, or the other way round, or a value instead of either
        ({"providers": [{"kind": "simulated"}]}, r"\[providers\] must be a table"),
        ({"providers": {"p": "simulated"}}, r"\[providers\.p\] must be a table"),
        ({"models": {"id": "m"}}, r"\[\[models\]\] must be an array"),
        ({"models": ["m"]}, r"\[\[models\]\] entry 1 must be a table"),
        ({"api_versions": "2026-01-01"}, r"\[\[api_versions\]\] must be an array"),
        ({"plans": {"big": 10}}, r"\[plans\.big\] must be a table"),
        ({"batches": "on"}, r"\[batches\] must be a table"),
        ({"connections": ["x"]}, r"\[connections\] must be a table"),
    ],
)
def test_bad_settings_raise_config_error(document: dict[str, object], message: str) -> None:
    """Every kind of bad input is a ConfigError naming what is wrong, never a bare TypeError/KeyError."""
    with pytest.raises(ConfigError, match=message):
        settings_from_mapping(document, env={})


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    """A missing file or broken TOML is a ConfigError naming the file."""
    with pytest.raises(ConfigError, match=r"missing\.toml"):
        load_settings(tmp_path / "missing.toml", env={})
    with pytest.raises(ConfigError, match=r"broken\.toml"):
        load_settings(_write(tmp_path, "port = ").rename(tmp_path / "broken.toml"), env={})


def test_the_stall_timeout_never_cuts_what_a_provider_may_take_silently() -> None:
    """A provider's stall timeout is stream_stall_timeout, raised where the provider's idle timeout or its
    connect plus first-token timeouts on each attempt would exceed it: the ingress never ends a response
    its worker is still allowed to wait for."""
    slow = {
        "kind": "simulated",
        "retries": 1,
        "timeouts": {"connect": 5.0, "idle": 20.0, "first_token": 60.0},
    }
    quick = {"kind": "simulated", "retries": 0, "timeouts": {"connect": 1.0, "idle": 2.0, "first_token": 1.0}}
    document = {
        "stream_stall_timeout": 30.0,
        "providers": {"slow": slow, "quick": quick},
        "models": [{"id": "m", "provider": "slow"}],
    }
    settings = settings_from_mapping(document, env={})
    assert settings.stall_timeout("slow") == 2 * (5.0 + 60.0 + DEADLINE_GRACE) * STALL_HEADROOM
    assert settings.stall_timeout("quick") == 30.0
    idle_bound = {**quick, "timeouts": {"connect": 0.1, "idle": 2.0, "first_token": 0.1}}
    document = {**document, "stream_stall_timeout": 0.5, "providers": {"slow": idle_bound}}
    settings = settings_from_mapping(document, env={})
    assert settings.stall_timeout("slow") == (2.0 + DEADLINE_GRACE) * STALL_HEADROOM  # the grace counts too


def test_batch_settings_come_from_their_table_and_the_storage_dir_from_the_environment() -> None:
    """[batches] sets the Batch API's bounds; AIOROUTER_BATCH_STORAGE_DIR overrides the local directory."""
    from shared.settings import settings_from_mapping as build

    plans = {"developer": {"batch_price_factor": 1}}
    raw = {"batches": {"max_lines": 10, "lines_in_flight": 4}, "plans": plans}
    settings = build(raw, env={"AIOROUTER_BATCH_STORAGE_DIR": "/tmp/x"})
    assert (settings.batches.max_lines, settings.batches.lines_in_flight) == (10, 4)
    assert settings.batches.storage_dir == "/tmp/x"
    assert settings.plans["developer"].batch_price_factor == 1
    assert settings.plans["business"].batch_price_factor == 0.5


def test_s3_storage_needs_a_bucket() -> None:
    """Choosing the S3 backend without a bucket is a configuration error at start-up."""
    import pytest

    from shared.errors import ConfigError
    from shared.settings import settings_from_mapping as build

    with pytest.raises(ConfigError):
        build({"batches": {"storage": "s3"}}, env={})


def test_the_batch_drivers_niceness_must_be_one_the_kernel_accepts() -> None:
    """driver_nice outside 0..19 is refused at start-up rather than failing in os.nice later."""
    import pytest

    from shared.errors import ConfigError
    from shared.settings import settings_from_mapping as build

    assert build({"batches": {"driver_nice": 19}}, env={}).batches.driver_nice == 19
    for wrong in (-1, 20):
        with pytest.raises(ConfigError):
            build({"batches": {"driver_nice": wrong}}, env={})
