"""The markdown page of a suite's results: machine, targets, the comparison with the relay, every scenario."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.report import COLUMNS, SERVER_TIMING_ORDER, show
from bench.targets import RelayComparison, TargetCheck

_MET = {True: "yes", False: "**no**", None: "not measured"}
LOADGEN_BOUND_PERCENT = 90
_ROUTER_PROCESSES = ("ingress", "worker-")


def render(
    machine: dict[str, Any],
    config: dict[str, Any],
    rows: Sequence[dict[str, Any]],
    checks: Sequence[TargetCheck],
    comparisons: Sequence[RelayComparison] = (),
    breakdown: Sequence[dict[str, Any]] = (),
) -> str:
    lines = [
        f"# AIOrouter benchmark, {machine['date']}",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, Linux {machine['kernel']}, "
        f"Python {machine['python']}, Redis {machine['redis']}; commit {machine['commit']}.",
        f"Load generator, simulated upstream and system under test all on this machine, over loopback. "
        f"{config['repeat']} repetitions of every scenario ({config['warmup_s']:g} s warm-up, "
        f"{config['duration_s']:g} s measured; the slow streams: {config['slow_repeat']} of "
        f"{config['slow_stream_s']:g} s); figures are medians with min\N{EN DASH}max. "
        f"Command: `{config['command']}`.",
        *_handoff_notice(machine.get("handoff")),
        *_settings_notice(config),
        "",
        *_abort_notice(config),
        "## Targets (AIOrouter, 1 ingress + 1 worker process)",
        "",
        "| target | goal | measured | met | relay, same run |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {c.name} | {c.goal} | {c.measured} | {_MET[c.met]} | {c.relay} |" for c in checks]
    lines += _relay_section(comparisons)
    lines += _breakdown_section(breakdown)
    lines += [
        "",
        "## Every scenario",
        "",
        "`direct` is the load generator against the simulated upstream; `aiorouter` goes through "
        "`aiorouter ingress` and `aiorouter worker` processes; `relay` through `bench/relay.py`, the "
        "minimal Starlette + httpx pass-through relay (one process). CPU is % of one core over the measured "
        "window, median of the repetitions; `aiorouter` is its ingress and workers together, and `redis` "
        "the Redis server they use (measured when it runs on this machine; not in that total). A \\* marks "
        f"a row where the load generator itself used at least {LOADGEN_BOUND_PERCENT}% of a core, so the "
        "figure is a floor set by the load generator, not by the system measured.",
        "",
        "| scenario | target | " + " | ".join(COLUMNS) + " | errors | CPU % |",
        "| --- | --- | " + " | ".join("---:" for _ in COLUMNS) + " | --- | --- |",
    ]
    for row in rows:
        cells = [show(row["columns"][name]) for name in COLUMNS]
        errors = ", ".join(f"{kind}: {count}" for kind, count in sorted(row["errors"].items())) or "0"
        cpu = _cpu_cell(row["cpu_percent"])
        bound = row["cpu_percent"].get("loadgen", 0) >= LOADGEN_BOUND_PERCENT
        target = row["target"] + (" \\*" if bound else "")
        lines.append(f"| {row['title']} | {target} | " + " | ".join(cells) + f" | {errors} | {cpu} |")
    samples = [(row, kind, text) for row in rows for kind, text in row["error_samples"].items()]
    if samples:
        lines += ["", "Error messages (first of each kind):", ""]
        lines += [f"- {row['title']}, {row['target']}, `{kind}`: {text}" for row, kind, text in samples]
    return "\n".join(lines) + "\n"


def _handoff_notice(handoff: dict[str, float] | None) -> list[str]:
    """What waking a process costs here: the figure that sets the one-client and low-rate rows."""
    if not handoff:
        return []
    return [
        f"A round trip to the idle Redis over loopback (`bench/handoff.py`): "
        f"{handoff['idle_round_trip_us']:.1f} µs, against {handoff['busy_round_trip_us']:.1f} µs back "
        f"to back; the write that wakes it costs the writer {handoff['idle_write_cpu_us']:.1f} µs of CPU."
    ]


def _relay_section(comparisons: Sequence[RelayComparison]) -> list[str]:
    if not comparisons:
        return []
    lines = [
        "",
        "## Against the pass-through relay, same run",
        "",
        "The relay is `bench/relay.py`, a minimal Starlette + httpx pass-through relay in one process "
        "(no auth, no validation): it forwards the request body and relays the answer's bytes, the least "
        "any router does. Measured on this machine in this run, it is a fair peer where targets set on "
        "another machine are not. Latencies are each one's latency added over `direct` in the same "
        "repetition. CPU per request is the CPU the system's processes spent together per request "
        "answered (AIOrouter: its ingress, workers and Redis; the relay: its one process; a stream counts "
        "once): on a shared box, the cores the load generator and the upstream leave, over it, bound the "
        "rate. The ratio is AIOrouter's median over the relay's: above 1 means AIOrouter does more "
        "per second, adds more latency, or spends more CPU.",
        "",
        "| figure | aiorouter | relay | aiorouter / relay |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {c.name} | {c.aiorouter} | {c.relay} | {c.ratio} |" for c in comparisons]
    return lines


def _breakdown_section(breakdown: Sequence[dict[str, Any]]) -> list[str]:
    if not breakdown:
        return []
    names = [n for n in SERVER_TIMING_ORDER if any(n in row["entries"] for row in breakdown)]
    lines = [
        "",
        "## Where the time goes (AIOrouter, medians)",
        "",
        "Each request's `Server-Timing` entries ([observability](../../docs/observability.md#server-timing)),"
        " median per run, median over the repeats; `client p50` is the load generator's own p50 latency"
        " (time to first token for a stream). For a JSON answer `total` less the entries before it is the"
        " breaker and in-flight check, the final frame's way through Redis and the ingress' reply;"
        " `client p50` less `total` is the HTTP exchange on both ends. A stream's headers leave at its first"
        " content: `upstream` there is the start-to-first-content time the ingress saw.",
        "",
        "| scenario | client p50 | " + " | ".join(names) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in names) + " |",
    ]
    for row in breakdown:
        client = row["client_p50_ms"]
        cells = [f"{row['entries'][n]:.2f}" if n in row["entries"] else "-" for n in names]
        shown = f"{client:.2f}" if client is not None else "-"
        lines.append(f"| {row['title']} | {shown} | " + " | ".join(cells) + " |")
    return lines


def _settings_notice(config: dict[str, Any]) -> list[str]:
    """A line naming a provider setting the run changed from the product's default."""
    if config.get("upstream_stream", "always") == "always":
        return []
    return [
        f'The simulated provider ran with `upstream_stream = "{config["upstream_stream"]}"`: non-stream '
        "requests were JSON calls upstream (the default streams every call)."
    ]


def _abort_notice(config: dict[str, Any]) -> list[str]:
    aborted = config.get("aborted")
    return [f"**The suite stopped early**: {aborted.splitlines()[0]}", ""] if aborted else []


def _cpu_cell(percents: dict[str, float]) -> str:
    cell = ", ".join(f"{name} {percent:.0f}" for name, percent in percents.items())
    router = [percent for name, percent in percents.items() if name.startswith(_ROUTER_PROCESSES)]
    return f"{cell} (aiorouter {sum(router):.0f})" if router else cell
