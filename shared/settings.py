"""One frozen, typed settings object, built once at start-up and passed down explicitly.

Sources, later ones winning: built-in defaults, an optional TOML file (``AIOROUTER_CONFIG`` or the
``path`` argument), then a few ``AIOROUTER_*`` environment variables for the values operators change most
(see ``ENV_OVERRIDES``).  Nothing reads the environment after :func:`load_settings` returns.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import date
from pathlib import Path
from typing import Any, Literal

from shared.errors import ConfigError
from shared.redis_client import check_redis_url

ProviderKind = Literal["simulated", "openai", "anthropic"]
HttpClientKind = Literal["fast", "httpx"]
UpstreamStream = Literal["always", "as_requested"]
RoutingStrategy = Literal["priority", "weighted", "least-busy", "latency"]
VersionStatus = Literal["current", "deprecated"]
LogFormat = Literal["json", "text"]
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
StorageBackend = Literal["local", "s3"]

CURRENT_API_VERSION = "2026-06-01"
STALL_HEADROOM = 1.25  # a stall deadline is at least this times what a provider may legitimately stay silent
# Seconds an upstream call found past its first-token or idle deadline still has to show a line it sent in
# time (unread yet when the deadline's check ran): the OpenAI-compatible adapter's deadlines are that late.
DEADLINE_GRACE = 0.5


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-provider upstream timeouts, in seconds."""

    connect: float = 5.0
    first_token: float = 30.0
    idle: float = 60.0
    total: float = 600.0
    answer: float = 300.0  # a JSON call's whole answer (upstream_stream = "as_requested"), from its start


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    """One upstream provider; its worker pool consumes the rq queue named after it."""

    name: str
    kind: ProviderKind = "simulated"
    base_url: str = ""
    api_key: str = field(default="", repr=False)
    concurrency: int = 4096  # jobs one worker process holds at most; it takes fewer while its loop lags
    queue_limit: int = 10_000
    requests_per_minute: int = 0  # upstream calls started per minute, across all worker processes (0 = none)
    max_concurrency: int = 0  # upstream calls in flight across every worker process (0 = no cap)
    cap_wait: float = 1.0  # seconds a job over a provider-wide cap waits for room before it falls back
    retries: int = 1  # extra attempts on the same deployment, before any content, before falling back
    retry_backoff: float = 0.2  # seconds; the base of the jittered exponential backoff between attempts
    max_retry_after: float = 2.0  # an upstream Retry-After up to this is honoured; a longer one falls back
    timeouts: Timeouts = Timeouts()
    # "always": every upstream call streams, so the first-token and idle deadlines watch it; "as_requested"
    # (openai providers): a request without ``stream`` is one JSON call, cheaper, watched by the connect
    # and answer deadlines only (see docs/settings.md).
    upstream_stream: UpstreamStream = "always"
    # How the worker reaches the upstream: "fast" (our HTTP/1.1 client) or "httpx" (proxies, HTTP/2).
    http_client: HttpClientKind = "fast"
    ca_file: str = ""  # PEM bundle of CAs to trust instead of the system's (and certifi's)
    client_cert: str = ""  # PEM client certificate for mutual TLS (its key too, unless client_key is set)
    client_key: str = ""
    proxy: str = ""  # http(s)://[user:pass@]host:port; httpx only (it also honours HTTPS_PROXY/NO_PROXY)
    http2: bool = False  # httpx only
    # Simulated provider only: tokens per second per stream (0 = as fast as possible).
    tokens_per_second: float = 0.0


@dataclass(frozen=True, slots=True)
class Deployment:
    """A model served by one provider under the provider's own model name."""

    provider: str
    upstream_model: str
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """A public model id in the catalog, with its prices (USD per million tokens) and deployments."""

    id: str
    deployments: tuple[Deployment, ...]
    owned_by: str = "aiorouter"
    created: int = 1_780_272_000  # 2026-06-01T00:00:00Z
    context_length: int = 131_072
    input_price_per_m: float = 0.0
    output_price_per_m: float = 0.0
    cached_input_price_per_m: float | None = None  # prompt tokens read from the upstream's cache; None: input
    strategy: RoutingStrategy = "priority"


@dataclass(frozen=True, slots=True)
class ApiVersion:
    """A dated API version; deprecated ones carry a sunset date after which they answer 410."""

    version: str
    status: VersionStatus = "current"
    deprecated_on: date | None = None
    sunset: date | None = None


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """The per-deployment circuit breaker (see :mod:`shared.breaker`), in seconds."""

    failure_threshold: int = 5  # failures within `window` that open the breaker
    window: float = 30.0  # sliding window failures are counted in
    cooldown: float = 30.0  # how long an open breaker rejects everything before admitting one probe
    probe_timeout: float = 60.0  # a claimed probe that reports nothing this long frees the slot again
    open_set_refresh: float = 0.5  # how often an ingress re-reads the set of open deployments


@dataclass(frozen=True, slots=True)
class RoutingStatsSettings:
    """The statistics the ``least-busy`` and ``latency`` strategies read (see :mod:`shared.routing_state`)."""

    latency_alpha: float = 0.3  # weight of a new time-to-first-token sample in the decayed average
    latency_ttl: float = 600.0  # seconds without a sample after which a deployment's latency is unknown


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one ingress process accepts from a connection before any authentication
    (see :mod:`ingress.connection_guard`); seconds and bytes."""

    max_header_bytes: int = 64 * 1024  # request line and headers of one request; more is 431
    max_headers: int = 100  # header fields of one request; more is 431
    header_timeout: float = 10.0  # to receive a request's line and headers, from its first byte; then 408
    # A request's body must keep arriving, else 408: never `body_timeout` seconds without a byte of it,
    # and from `body_timeout` seconds after its headers on, at an average of at least `body_min_rate`
    # bytes per second since them (ingress.connection_guard).
    body_timeout: float = 60.0
    body_min_rate: float = 32768.0
    keepalive_timeout: int = 5  # an idle keep-alive connection is closed after this
    # Open connections of one process; a request on one more is 503.  0: the process' open-file limit
    # (its soft RLIMIT_NOFILE) less what the process needs besides clients (ingress.connection_guard).
    max_connections: int = 0
    log_interval: float = 60.0  # at most one log line per limit in this many seconds


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """Files and the Batch API (``[batches]``; see docs/batch.md): where files live, their bounds, and how
    the batch driver feeds batch lines into each pool's batch lane."""

    storage: StorageBackend = "local"
    storage_dir: str = "aiorouter-files"  # the local backend's directory (relative to the working directory)
    s3_bucket: str = ""
    s3_prefix: str = "aiorouter/"
    s3_endpoint_url: str = ""  # empty: AWS; set for MinIO, R2 and other S3-compatible stores
    s3_region: str = ""
    file_ttl: int = 30 * 86_400  # seconds an uploaded or output file lives
    max_file_bytes: int = 200 * 1024 * 1024
    max_files_per_account: int = 2_000  # files an account holds (uploads and results) past which uploads fail
    max_lines: int = 50_000
    completion_window: int = 86_400  # seconds the only completion window, "24h", lasts
    lines_in_flight: int = 512  # batch lines queued or running at once per pool, across every batch
    max_attempts: int = 3  # runs of one line (worker lost, upstream unavailable) before it fails
    interactive_reserve: float = 0.1  # share of each worker's slots batch lines never take
    # While interactive jobs run on a worker (or ran within `interactive_grace` seconds), its lane halves
    # the lines it holds whenever the worker's recent peak loop lag passes `yield_lag` seconds and adds one
    # when it does not, down to `yield_floor` lines (workers.lane_throttle); 0 s: the lane never yields.
    yield_lag: float = 0.004
    yield_floor: int = 1
    interactive_grace: float = 2.0
    driver_lease: float = 5.0  # seconds a dead batch driver's lease blocks its successor
    poll_interval: float = 0.2  # seconds between two rounds of the batch driver
    driver_nice: int = 10  # the batch driver's CPU niceness increment: interactive processes run first


@dataclass(frozen=True, slots=True)
class Plan:
    """An account plan: its request rate limit and an optional token rate limit (0 = none), and what its
    batches may hold and pay."""

    name: str
    requests_per_minute: int
    tokens_per_minute: int = 0
    batch_queued_lines: int = 200_000  # lines of the account's unfinished batches, at most
    batch_price_factor: float = 0.5  # batch lines cost this share of the model's prices


MAX_PLAN_LIMIT = 60_000_000
"""The highest per-minute limit a plan may set: the rate limit spaces requests and tokens in whole
microseconds of Redis time (``shared.ratelimit.PERIOD_US`` per minute), so a higher one could not be kept."""

DEFAULT_PLANS: tuple[Plan, ...] = (
    Plan("unverified", requests_per_minute=10),
    Plan("developer", requests_per_minute=60),
    Plan("business", requests_per_minute=300),
)


def _default_plans() -> dict[str, Plan]:
    return {p.name: p for p in DEFAULT_PLANS}


@dataclass(frozen=True, slots=True)
class Settings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_auto_pipeline: bool = True  # false: plain redis-py on the hot path too (diagnosis)
    providers: Mapping[str, ProviderSettings] = field(default_factory=dict)
    models: Mapping[str, ModelEntry] = field(default_factory=dict)
    api_versions: Mapping[str, ApiVersion] = field(default_factory=dict)
    default_api_version: str = CURRENT_API_VERSION
    # Ingress
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 4 * 1024 * 1024
    queue_timeout: float = 10.0  # seconds a job may wait for a worker before 503 queue_timeout
    stream_ping_interval: float = 15.0  # seconds of silence before a `: ping` comment line
    # Seconds a started request may go without a frame of its job (pings do not count) before it ends
    # with 503 response_stalled and its job is cancelled; never less than its provider may stay silent
    # (see `stall_timeout`).
    stream_stall_timeout: float = 120.0
    stream_buffer_bytes: int = 1024 * 1024  # bytes of a stream that may wait for a client that reads slowly
    client_stall_timeout: float = 30.0  # seconds a stream's client may take nothing while bytes wait for it
    key_cache_ttl: float = 2.0  # seconds an authenticated key is trusted without asking Redis
    # Seconds an ingress' open requests get to finish after SIGTERM; those still open then end with 503
    # ingress_stopping (an error event on a stream) and their jobs are stopped (ingress.shutdown).
    ingress_shutdown_grace: float = 30.0
    # Workers
    worker_heartbeat_interval: float = 1.0
    worker_dead_after: float = 4.0  # a worker silent this long is dead; its clients get an error
    worker_shutdown_grace: float = 30.0  # seconds a worker's running jobs get to finish after SIGTERM
    worker_prefetch: int = 64  # most jobs a worker process holds that it has not started yet
    # A worker takes no new job while its event loop lags this many seconds behind (smoothed), and takes
    # them again below half of it (workers.loop_load); 0: never stops for its loop.
    worker_saturated_lag: float = 0.25
    # Net container allocations between two collections of the youngest GC generation in the server
    # processes, which also freeze what start-up created (cli.gc_tuning); 0: Python's defaults.
    gc_young_threshold: int = 10_000
    job_timeout: int = 900  # rq job timeout (seconds) for one completion
    result_ttl: int = 60  # seconds a finished job's record stays in rq's finished registry
    failure_ttl: int = 3_600  # seconds a failed or abandoned job's record stays in rq's failed registry
    job_record_prompt_bytes: int = 256  # bytes of the prompt a loaded job's record keeps for diagnosis
    admin_token: str = field(default="", repr=False)
    # Observability (docs/observability.md)
    metrics_token: str = field(default="", repr=False)  # bearer token of the ingress' GET /metrics; "" = off
    worker_metrics_port: int = 0  # a worker's Prometheus port (`aiorouter worker --metrics-port`); 0 = off
    log_level: str = "INFO"
    log_format: LogFormat = "text"  # "json": one JSON object per line
    otel_enabled: bool = False  # OpenTelemetry traces by OTLP (needs the [otel] extra)
    # Accounts and credits
    plans: Mapping[str, Plan] = field(default_factory=_default_plans)
    default_plan: str = "unverified"  # the plan of a new account unless one is given
    credit_default_max_tokens: int = 4096  # completion tokens reserved for a request without max_tokens
    max_keys_per_account: int = 100  # unrevoked API keys one account may hold (0 = no cap)
    key_creations_per_hour: int = 30  # API keys one account may create in a rolling hour (0 = no cap)
    # Seconds a credit hold outlives the last renewal by the worker running its job: how long a hold whose
    # ingress and worker both died stays locked before the sweep releases it.
    reservation_lease: float = 60.0
    breaker: BreakerSettings = BreakerSettings()
    routing_stats: RoutingStatsSettings = RoutingStatsSettings()
    connections: ConnectionLimits = ConnectionLimits()
    batches: BatchSettings = BatchSettings()

    def provider(self, name: str) -> ProviderSettings:
        return self.providers[name]

    def stall_timeout(self, provider: str) -> float:
        """Seconds a started job of ``provider`` may send nothing before its request ends: the larger of
        ``stream_stall_timeout`` and what the provider itself may take silently (its idle timeout, or its
        first-token timeout on each attempt) times :data:`STALL_HEADROOM`, so a healthy slow upstream,
        which the worker's own timeouts end with an error first, is never cut."""
        timeouts = self.providers[provider].timeouts
        attempts = self.providers[provider].retries + 1
        allowed = max(
            timeouts.idle + DEADLINE_GRACE,
            attempts * (timeouts.connect + timeouts.first_token + DEADLINE_GRACE),
        )
        return max(self.stream_stall_timeout, allowed * STALL_HEADROOM)


# Environment variables that override the file, and the field each one sets.
ENV_OVERRIDES: Mapping[str, str] = {
    "REDIS_URL": "redis_url",
    "AIOROUTER_REDIS_URL": "redis_url",
    "AIOROUTER_REDIS_AUTO_PIPELINE": "redis_auto_pipeline",
    "AIOROUTER_HOST": "host",
    "AIOROUTER_PORT": "port",
    "AIOROUTER_QUEUE_TIMEOUT": "queue_timeout",
    "AIOROUTER_STREAM_PING_INTERVAL": "stream_ping_interval",
    "AIOROUTER_GC_YOUNG_THRESHOLD": "gc_young_threshold",
    "AIOROUTER_STREAM_STALL_TIMEOUT": "stream_stall_timeout",
    "AIOROUTER_KEY_CACHE_TTL": "key_cache_ttl",
    "AIOROUTER_MAX_BODY_BYTES": "max_body_bytes",
    "AIOROUTER_WORKER_DEAD_AFTER": "worker_dead_after",
    "AIOROUTER_WORKER_SHUTDOWN_GRACE": "worker_shutdown_grace",
    "AIOROUTER_INGRESS_SHUTDOWN_GRACE": "ingress_shutdown_grace",
    "AIOROUTER_ADMIN_TOKEN": "admin_token",
    "AIOROUTER_METRICS_TOKEN": "metrics_token",
    "AIOROUTER_WORKER_METRICS_PORT": "worker_metrics_port",
    "AIOROUTER_LOG_LEVEL": "log_level",
    "AIOROUTER_LOG_FORMAT": "log_format",
    "AIOROUTER_OTEL_ENABLED": "otel_enabled",
}

# Environment variables that override one setting of the ``[batches]`` table.
BATCH_ENV_OVERRIDES: Mapping[str, str] = {
    "AIOROUTER_BATCH_STORAGE_DIR": "storage_dir",
}

DEFAULT_PROVIDERS: tuple[ProviderSettings, ...] = (ProviderSettings(name="simulated", kind="simulated"),)

DEFAULT_MODELS: tuple[ModelEntry, ...] = (
    ModelEntry(
        id="aiorouter/echo",
        deployments=(Deployment("simulated", "echo"),),
        input_price_per_m=0.10,
        output_price_per_m=0.20,
    ),
    ModelEntry(
        id="aiorouter/lorem",
        deployments=(Deployment("simulated", "lorem"),),
        input_price_per_m=0.10,
        output_price_per_m=0.20,
    ),
)


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from defaults, an optional TOML file and the environment."""
    env = os.environ if env is None else env
    path = path or env.get("AIOROUTER_CONFIG") or None
    raw: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read settings file {path}: {exc}") from exc
    return settings_from_mapping(raw, env)


def settings_from_mapping(raw: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from an already-parsed TOML document (plus environment overrides)."""
    raw = dict(raw)
    providers = _parse_providers(raw.pop("providers", None), env or {})
    models = _parse_models(raw.pop("models", None))
    versions = _parse_versions(raw.pop("api_versions", None))
    plans = _parse_plans(raw.pop("plans", None))
    breaker = _parse_table(BreakerSettings, raw.pop("breaker", None), "breaker")
    routing_stats = _parse_table(RoutingStatsSettings, raw.pop("routing_stats", None), "routing_stats")
    connections = _parse_table(ConnectionLimits, raw.pop("connections", None), "connections")
    batch_table = _table(raw.pop("batches", None), "[batches]")
    for var, name in BATCH_ENV_OVERRIDES.items():
        if env and env.get(var):
            batch_table[name] = env[var]
    batches = _parse_table(BatchSettings, batch_table, "batches")
    scalars = {f.name: f for f in fields(Settings)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in scalars:
            raise ConfigError(f"unknown setting {key!r}")
        values[key] = value
    for var, name in ENV_OVERRIDES.items():
        if env and env.get(var):
            values[name] = env[var]
    settings = Settings(
        providers=providers,
        models=models,
        api_versions=versions,
        plans=plans,
        breaker=breaker,
        routing_stats=routing_stats,
        connections=connections,
        batches=batches,
    )
    coerced = {name: _coerce(getattr(settings, name), value, name) for name, value in values.items()}
    settings = replace(settings, **coerced)
    _check(settings)
    return settings


def _coerce(default: Any, value: Any, name: str) -> Any:
    try:
        if isinstance(default, bool):
            return value if isinstance(value, bool) else _BOOLEANS[str(value).strip().lower()]
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        return str(value)
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(f"setting {name!r}: cannot use {value!r}") from exc


_BOOLEANS: Mapping[str, bool] = {
    **dict.fromkeys(("1", "true", "yes", "on"), True),
    **dict.fromkeys(("0", "false", "no", "off"), False),
}


def _table(raw: Any, name: str) -> dict[str, Any]:
    """A TOML table of the settings (empty when absent), or a clear :class:`ConfigError` when the file
    has something else there (``[[providers]]`` where ``[providers.NAME]`` tables belong, a string...)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{name} must be a table (got {type(raw).__name__}); see docs/settings.md")
    return dict(raw)


def _array(raw: Any, name: str) -> list[Any]:
    """A TOML array of tables of the settings (empty when absent), or a clear :class:`ConfigError`."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(
            f"{name} must be an array of tables (got {type(raw).__name__}); see docs/settings.md"
        )
    return raw


def _parse_table(cls: type[Any], raw: Any, name: str) -> Any:
    """A small frozen settings table (``[breaker]``, ``[routing_stats]``), typed like its defaults."""
    defaults = cls()
    values: dict[str, Any] = {}
    for key, value in _table(raw, f"[{name}]").items():
        if not hasattr(defaults, key):
            raise ConfigError(f"unknown setting {name}.{key}")
        values[key] = _coerce(getattr(defaults, key), value, f"{name}.{key}")
    return replace(defaults, **values)


def _parse_providers(raw: Any, env: Mapping[str, str]) -> dict[str, ProviderSettings]:
    if raw is None:
        return {p.name: p for p in DEFAULT_PROVIDERS}
    providers: dict[str, ProviderSettings] = {}
    for name, spec in _table(raw, "[providers]").items():
        spec = _table(spec, f"[providers.{name}]")
        key_env = spec.pop("api_key_env", "")
        if key_env:
            spec["api_key"] = env.get(key_env, "")
        try:
            timeouts = Timeouts(**spec.pop("timeouts", {}))
            provider = ProviderSettings(name=name, timeouts=timeouts, **spec)
        except TypeError as exc:
            raise ConfigError(f"provider {name!r}: {exc}") from exc
        _check_http_client(provider)
        _check_timeouts(provider)
        _check_upstream_stream(provider)
        providers[name] = provider
    return providers


def _check_timeouts(provider: ProviderSettings) -> None:
    for name in ("connect", "first_token", "idle", "total", "answer"):
        value = getattr(provider.timeouts, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
            raise ConfigError(
                f"provider {provider.name!r}: timeouts.{name} must be a positive number of seconds"
            )


def _check_upstream_stream(provider: ProviderSettings) -> None:
    if provider.upstream_stream not in ("always", "as_requested"):
        raise ConfigError(f'provider {provider.name!r}: upstream_stream must be "always" or "as_requested"')
    if provider.upstream_stream == "as_requested" and provider.kind != "openai":
        raise ConfigError(
            f'provider {provider.name!r}: upstream_stream = "as_requested" is for openai providers only'
        )


def _check_json_calls_fit(provider: ProviderSettings, job_timeout: float) -> None:
    """A JSON call that never answers must fail (and fall back, and count against the breaker) before the
    job's own time limit stops it, which does neither: every attempt's connect and answer deadlines
    together stay under ``job_timeout``."""
    if provider.upstream_stream != "as_requested":
        return
    timeouts = provider.timeouts
    attempts = provider.retries + 1
    needed = attempts * (timeouts.connect + min(timeouts.answer, timeouts.total) + DEADLINE_GRACE)
    if needed >= job_timeout:
        raise ConfigError(
            f"provider {provider.name!r}: its JSON calls may take {needed:g} s ((retries + 1) x (connect + "
            f"answer + {DEADLINE_GRACE:g})), not under job_timeout ({job_timeout:g} s): lower "
            "timeouts.answer or retries, or raise job_timeout"
        )


def _check_http_client(provider: ProviderSettings) -> None:
    """Refuse a transport setting the provider's HTTP client cannot honour, instead of ignoring it."""
    if provider.http_client not in ("fast", "httpx"):
        raise ConfigError(f'provider {provider.name!r}: http_client must be "fast" or "httpx"')
    if provider.http_client == "fast":
        needs_httpx = [name for name in ("proxy", "http2") if getattr(provider, name)]
        if needs_httpx:
            raise ConfigError(
                f'provider {provider.name!r}: {" and ".join(needs_httpx)} need http_client = "httpx"'
            )
    if provider.client_key and not provider.client_cert:
        raise ConfigError(f"provider {provider.name!r}: client_key without client_cert")


def _parse_models(raw: Any) -> dict[str, ModelEntry]:
    if raw is None:
        return {m.id: m for m in DEFAULT_MODELS}
    models: dict[str, ModelEntry] = {}
    for position, spec in enumerate(_array(raw, "[[models]]")):
        spec = _table(spec, f"[[models]] entry {position + 1}")
        try:
            deployments = tuple(Deployment(**d) for d in spec.pop("deployments", ()))
            if "provider" in spec:  # shorthand: one deployment
                deployments += (Deployment(spec.pop("provider"), spec.pop("upstream_model", spec["id"])),)
            entry = ModelEntry(deployments=deployments, **spec)
        except (TypeError, KeyError) as exc:
            raise ConfigError(f"model {spec.get('id')!r}: {exc}") from exc
        cached = entry.cached_input_price_per_m
        if cached is not None and not 0 <= cached <= entry.input_price_per_m:
            raise ConfigError(
                f"model {entry.id!r}: cached_input_price_per_m must be between 0 and its input price"
            )
        models[entry.id] = entry
    return models


def _parse_versions(raw: Any) -> dict[str, ApiVersion]:
    versions = {CURRENT_API_VERSION: ApiVersion(CURRENT_API_VERSION)}
    for position, spec in enumerate(_array(raw, "[[api_versions]]")):
        spec = _table(spec, f"[[api_versions]] entry {position + 1}")
        try:
            for key in ("deprecated_on", "sunset"):
                if isinstance(spec.get(key), str):
                    spec[key] = date.fromisoformat(spec[key])
            versions[spec["version"]] = ApiVersion(**spec)
        except (TypeError, KeyError, ValueError) as exc:
            raise ConfigError(f"API version {spec.get('version')!r}: {exc}") from exc
    return versions


def _parse_plans(raw: Any) -> dict[str, Plan]:
    """``[plans.NAME]`` tables; each one overrides or adds to the default plans."""
    plans = _default_plans()
    for name, spec in _table(raw, "[plans]").items():
        base = plans.get(name)
        values = {"requests_per_minute": base.requests_per_minute if base else 0} | _table(
            spec, f"[plans.{name}]"
        )
        try:
            plans[name] = Plan(name=name, **values)
        except TypeError as exc:
            raise ConfigError(f"plan {name!r}: {exc}") from exc
    return plans


def _check(settings: Settings) -> None:
    check_redis_url(settings.redis_url)  # a malformed URL is refused at start, not at the first command
    if not settings.providers:
        raise ConfigError("no providers configured")
    for provider in settings.providers.values():
        _check_json_calls_fit(provider, settings.job_timeout)
    for model in settings.models.values():
        if not model.deployments:
            raise ConfigError(f"model {model.id!r} has no deployments")
        for dep in model.deployments:
            if dep.provider not in settings.providers:
                raise ConfigError(f"model {model.id!r} names unknown provider {dep.provider!r}")
    for plan in settings.plans.values():
        limits = (plan.requests_per_minute, plan.tokens_per_minute)
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in limits):
            raise ConfigError(f"plan {plan.name!r}: limits must be integers")
        if plan.requests_per_minute <= 0 or plan.tokens_per_minute < 0:
            raise ConfigError(f"plan {plan.name!r}: requests_per_minute must be > 0, tokens_per_minute >= 0")
        if max(limits) > MAX_PLAN_LIMIT:
            raise ConfigError(
                f"plan {plan.name!r}: limits above {MAX_PLAN_LIMIT:,} per minute (one per microsecond) "
                "cannot be kept; use tokens_per_minute = 0 for no token limit"
            )
    if settings.max_keys_per_account < 0 or settings.key_creations_per_hour < 0:
        raise ConfigError("max_keys_per_account and key_creations_per_hour must be >= 0 (0 = no cap)")
    for limit in fields(ConnectionLimits):
        value = getattr(settings.connections, limit.name)
        if not (value > 0 or (limit.name == "max_connections" and value == 0)):
            raise ConfigError(f"connections.{limit.name} must be greater than 0")
    for name in ("stream_stall_timeout", "stream_buffer_bytes", "client_stall_timeout"):
        if getattr(settings, name) <= 0:
            raise ConfigError(f"{name} must be > 0")
    if settings.reservation_lease < 4 * settings.worker_heartbeat_interval:
        raise ConfigError(
            "reservation_lease must be at least 4 x worker_heartbeat_interval: workers renew it from their "
            "heartbeat once half of it has gone"
        )
    if settings.log_format not in ("json", "text"):
        raise ConfigError(f"log_format must be json or text, not {settings.log_format!r}")
    if settings.log_level.upper() not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}, not {settings.log_level!r}")
    if settings.ingress_shutdown_grace < 0:
        raise ConfigError("ingress_shutdown_grace must be >= 0")
    if settings.worker_saturated_lag < 0:
        raise ConfigError("worker_saturated_lag must be >= 0 (0 = off)")
    if settings.gc_young_threshold < 0:
        raise ConfigError("gc_young_threshold must be >= 0 (0 = Python's default)")
    if not 0 <= settings.worker_metrics_port < 65536:
        raise ConfigError("worker_metrics_port must be a port number (0 = off)")
    if not 0 <= settings.port < 65536:
        raise ConfigError("port must be a port number (0 = any free one)")
    for plan in settings.plans.values():
        if plan.batch_queued_lines < 0 or not 0 <= plan.batch_price_factor <= 1:
            raise ConfigError(
                f"plan {plan.name!r}: batch_queued_lines must be >= 0, batch_price_factor within [0, 1]"
            )
    _check_batches(settings.batches)
    if settings.default_plan not in settings.plans:
        raise ConfigError(f"default plan {settings.default_plan!r} is not in plans")
    if settings.default_api_version not in settings.api_versions:
        raise ConfigError(f"default API version {settings.default_api_version!r} is not in api_versions")


MIN_DRIVER_LEASE = 0.003
"""Seconds: the shortest batch-driver lease (three whole milliseconds, renewed every millisecond)."""


def _check_batches(batches: BatchSettings) -> None:
    if batches.storage not in ("local", "s3"):
        raise ConfigError(f"batches.storage must be 'local' or 's3' (got {batches.storage!r})")
    if batches.storage == "s3" and not batches.s3_bucket:
        raise ConfigError("batches.storage = 's3' needs batches.s3_bucket")
    counts = (
        batches.file_ttl,
        batches.max_file_bytes,
        batches.max_files_per_account,
        batches.max_lines,
        batches.lines_in_flight,
    )
    if min(counts) < 1 or batches.max_attempts < 1 or batches.completion_window < 1:
        raise ConfigError("batches: sizes, counts and durations must be positive")
    if not 0 <= batches.interactive_reserve < 1:
        raise ConfigError("batches.interactive_reserve must be within [0, 1)")
    if not 0 <= batches.driver_nice <= 19:
        raise ConfigError("batches.driver_nice must be within [0, 19]")
    if batches.yield_lag < 0 or batches.yield_floor < 0 or batches.interactive_grace < 0:
        raise ConfigError("batches: yield_lag, yield_floor and interactive_grace must be >= 0")
    # The lease is kept in whole milliseconds and renewed every third of it; the driver sleeps between
    # rounds: neither may be 0 (or NaN, or infinite), or the driver spins on Redis.
    if not MIN_DRIVER_LEASE <= batches.driver_lease < math.inf:
        raise ConfigError(f"batches.driver_lease must be at least {MIN_DRIVER_LEASE} s (and finite)")
    if not 0 < batches.poll_interval < math.inf:
        raise ConfigError("batches.poll_interval must be > 0 (and finite)")
