"""The benchmark's scenarios and how long each runs in full and ``--quick`` mode."""

from __future__ import annotations

from dataclasses import dataclass

DIRECT = "direct"
AIOROUTER = "aiorouter"
RELAY = "relay"  # bench.relay, the minimal pass-through peer measured in the same run
TARGETS = (DIRECT, AIOROUTER, RELAY)
SLOW_STREAM_CLIENTS = 2000
SLOW_TOKENS_PER_S = 20
STREAM50 = "sim?tokens=50"
SCALING_WORKERS = (1, 2, 4)


@dataclass(frozen=True, slots=True)
class Timing:
    """Durations of one suite run."""

    warmup_s: float
    duration_s: float
    repeat: int
    slow_stream_s: float  # how long each of the 2,000 slow streams lasts
    slow_ramp_s: float  # the slow streams start spread over this long
    slow_repeat: int  # repetitions of the slow-stream scenario


FULL = Timing(warmup_s=1.0, duration_s=5.0, repeat=3, slow_stream_s=30.0, slow_ramp_s=5.0, slow_repeat=3)
QUICK = Timing(warmup_s=0.5, duration_s=2.0, repeat=2, slow_stream_s=5.0, slow_ramp_s=2.0, slow_repeat=1)


@dataclass(frozen=True, slots=True)
class Scenario:
    """One load shape, run against each of its targets."""

    name: str
    title: str
    upstream_model: str
    tokens: int
    stream: bool = False
    clients: int = 1
    rate: float = 0.0
    workers: int = 1  # AIOrouter worker processes
    requests_per_client: int = 0
    ramp_s: float = 0.0
    targets: tuple[str, ...] = TARGETS
    repeat: int | None = None  # None: the timing's repeat
    timeout_s: float = 60.0  # a request not answered this long counts as a timeout


def scenarios(timing: Timing) -> list[Scenario]:
    """Every scenario, grouped so AIOrouter's worker count changes as rarely as possible."""
    slow_tokens = int(SLOW_TOKENS_PER_S * timing.slow_stream_s)
    suite = [
        *(
            Scenario(f"nonstream_c{c}", f"non-stream, {_clients(c)}", "sim", 16, clients=c)
            for c in (1, 16, 64, 256)
        ),
        *(
            Scenario(f"stream50_c{c}", f"50-token streams, {c} clients", STREAM50, 50, stream=True, clients=c)
            for c in (16, 64)
        ),
        Scenario("open100_lat50", "open loop 100 req/s, 50 ms upstream", "sim?latency_ms=50", 16, rate=100.0),
        Scenario("ttft_c1", "time to first token, 1 client", STREAM50, 50, stream=True),
        Scenario(
            "slow_streams",
            f"{SLOW_STREAM_CLIENTS} streams at {SLOW_TOKENS_PER_S} tokens/s for {timing.slow_stream_s:g} s",
            f"sim?tokens={slow_tokens}&itl_ms={1000 // SLOW_TOKENS_PER_S}",
            slow_tokens,
            stream=True,
            clients=SLOW_STREAM_CLIENTS,
            requests_per_client=1,
            ramp_s=timing.slow_ramp_s,
            targets=(DIRECT, AIOROUTER),
            repeat=timing.slow_repeat,
            timeout_s=2 * timing.slow_stream_s + timing.slow_ramp_s + 10,
        ),
    ]
    for workers in SCALING_WORKERS[1:]:  # one worker is nonstream_c64 and stream50_c16 above
        suite += [
            Scenario(
                f"scaling_nonstream_c64_w{workers}",
                f"non-stream, 64 clients, {workers} worker processes",
                "sim",
                16,
                clients=64,
                workers=workers,
                targets=(AIOROUTER,),
            ),
            Scenario(
                f"scaling_stream50_c16_w{workers}",
                f"50-token streams, 16 clients, {workers} worker processes",
                STREAM50,
                50,
                stream=True,
                clients=16,
                workers=workers,
                targets=(AIOROUTER,),
            ),
        ]
    return suite


def _clients(count: int) -> str:
    return "1 client" if count == 1 else f"{count} clients"


def router_models(suite: list[Scenario]) -> dict[str, str]:
    """One AIOrouter catalog model per distinct upstream behaviour: public id -> upstream model name."""
    upstream_models = dict.fromkeys(s.upstream_model for s in suite)
    return {model_id(m): m for m in upstream_models}


def model_id(upstream_model: str) -> str:
    """The catalog id AIOrouter knows an upstream behaviour by, e.g. ``bench/sim-tokens-50``."""
    cleaned = upstream_model.replace("?", "-").replace("&", "-").replace("=", "-")
    return f"bench/{cleaned}"
