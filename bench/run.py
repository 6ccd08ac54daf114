"""Run the benchmark suite: every scenario direct to the simulated upstream, via AIOrouter and the relay.

    python -m bench.run            # full suite (several minutes)
    python -m bench.run --quick    # short windows, about three minutes
    python -m bench.run --targets direct --only stream   # a subset

AIOrouter is started from its own CLI (``aiorouter ingress`` and ``aiorouter worker``) with a generated
TOML settings file and ``REDIS_URL`` (default ``$REDIS_URL``); the relay (``bench.relay``) is the minimal
pass-through peer measured in the same run. Results go to ``bench/results/<date>-<name>.json`` and the
table to ``bench/results/latest.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.loadgen import LoadSpec, run_load
from bench.markdown_table import render
from bench.proc_stats import rss_bytes, wait_until_idle
from bench.processes import ProcessDied, RelayProcess, RouterProcesses, UpstreamProcess, serving_stack
from bench.report import Run, describe_machine, redis_pid, summarize, time_breakdown
from bench.scenarios import (
    AIOROUTER,
    FULL,
    QUICK,
    RELAY,
    TARGETS,
    Scenario,
    Timing,
    model_id,
    router_models,
    scenarios,
)
from bench.targets import check_targets, compare_with_relay
from bench.upstream import event_loop_factory

RESULTS_DIR = Path(__file__).parent / "results"
IDLE_CPU_PERCENT = 10.0  # the system under test counts as idle below this much of one core, all together
SETTLE_TIMEOUT_S = 60.0


class Suite:
    """The processes under test and the runs measured so far."""

    def __init__(
        self,
        timing: Timing,
        targets: Sequence[str],
        upstream: UpstreamProcess,
        router: RouterProcesses | None,
        relay: RelayProcess | None,
        redis_pid: int | None = None,
    ) -> None:
        """``redis_pid``: the Redis AIOrouter uses, when it runs on this machine: its CPU is measured
        with AIOrouter's processes (not waited for between runs: its own expiry cycles go on)."""
        self.timing = timing
        self.targets = targets
        self.upstream = upstream
        self.router = router
        self.relay = relay
        self.redis_pid = redis_pid
        self.runs: list[Run] = []
        self._runner = asyncio.Runner(loop_factory=event_loop_factory())

    def run_scenario(self, scenario: Scenario) -> None:
        if (
            self.router is not None
            and AIOROUTER in scenario.targets
            and len(self.router.workers) != scenario.workers
        ):
            self.router.set_workers(scenario.workers)
        targets = [t for t in scenario.targets if t in self.targets]
        for repeat in range(scenario.repeat or self.timing.repeat):
            for target in targets:
                self.runs.append(self._measure(scenario, target, repeat))
                self._settle(target)

    def _settle(self, target: str) -> None:
        """Let the system finish whatever the last run left behind (e.g. abandoned jobs) before the next."""
        self.upstream.child.check_alive()
        if target == AIOROUTER and self.router is not None:
            self.router.check_alive()
        if target == RELAY and self.relay is not None:
            self.relay.child.check_alive()
        pids = self._processes(target)
        self._runner.run(wait_until_idle(pids, IDLE_CPU_PERCENT, max_wait=SETTLE_TIMEOUT_S))

    def _processes(self, target: str) -> dict[str, int]:
        """The pids a run against ``target`` involves, by the name its CPU is reported under."""
        pids = {"upstream": self.upstream.child.pid}
        if target == AIOROUTER and self.router is not None:
            pids |= self.router.pids
        if target == RELAY and self.relay is not None:
            pids["relay"] = self.relay.child.pid
        return pids

    def _measure(self, scenario: Scenario, target: str, repeat: int) -> Run:
        watch = self._processes(target)
        if target == AIOROUTER and self.redis_pid is not None:
            watch["redis"] = self.redis_pid
        base_url, model, api_key = self.upstream.base_url, scenario.upstream_model, None
        if target == AIOROUTER:
            assert self.router is not None
            base_url, model, api_key = (
                self.router.base_url,
                model_id(scenario.upstream_model),
                self.router.api_key,
            )
        elif target == RELAY:
            assert self.relay is not None
            base_url = self.relay.base_url
        spec = LoadSpec(
            base_url=base_url,
            model=model,
            tokens=scenario.tokens,
            stream=scenario.stream,
            clients=scenario.clients,
            rate=scenario.rate,
            duration_s=self.timing.duration_s,
            warmup_s=self.timing.warmup_s,
            requests_per_client=scenario.requests_per_client,
            ramp_s=scenario.ramp_s,
            timeout_s=scenario.timeout_s,
            api_key=api_key,
            watch=watch,
        )
        baseline = {name: round(rss_bytes(pid) / 2**20, 1) for name, pid in watch.items()}
        result = self._runner.run(run_load(spec)).to_dict()
        _progress(scenario, target, repeat, result)
        return {
            "scenario": scenario.name,
            "title": scenario.title,
            "target": target,
            "workers": scenario.workers if target == AIOROUTER else 0,
            "repeat": repeat,
            "rss_baseline_mib": baseline,
            "result": result,
        }

    def close(self) -> None:
        self._runner.close()


def _progress(scenario: Scenario, target: str, repeat: int, result: dict[str, Any]) -> None:
    latency = result["latency_ms"] or {}
    print(
        f"{scenario.name:<28} {target:<9} #{repeat + 1}: {result['requests_per_s']:>9,.1f} req/s "
        f"{result['chunks_per_s']:>10,.0f} chunks/s  p50 {latency.get('p50', 0):7.2f} ms  "
        f"p99 {latency.get('p99', 0):7.2f} ms  errors {sum(result['errors'].values())}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows; the suite takes ~3 minutes")
    parser.add_argument("--repeat", type=int, help="repetitions of every scenario")
    parser.add_argument("--duration", type=float, help="measured seconds of every timed scenario")
    parser.add_argument(
        "--targets", default=",".join(TARGETS), help=f"comma-separated, of: {', '.join(TARGETS)}"
    )
    parser.add_argument("--only", action="append", default=[], help="run scenarios whose name contains this")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--concurrency", type=int, default=4096, help="jobs each worker process runs at once")
    parser.add_argument(
        "--upstream-stream",
        choices=["always", "as_requested"],
        default="always",
        help="the simulated provider's upstream_stream setting (default: the product's default, always)",
    )
    parser.add_argument("--name", default="suite", help="results file name: <date>-<name>.json")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--serve",
        type=int,
        metavar="WORKERS",
        help="measure nothing: start the upstream, the relay and AIOrouter with WORKERS worker processes, "
        "print how to reach them (for py-spy and bench.loadgen by hand), and wait for Ctrl-C",
    )
    args = parser.parse_args(argv)
    args.command_line = "python -m bench.run " + shlex.join(sys.argv[1:] if argv is None else argv)
    if args.serve:
        _serve(args.redis_url, args.concurrency, args.serve, args.upstream_stream)
        return 0
    timing = QUICK if args.quick else FULL
    timing = replace(
        timing,
        duration_s=args.duration or timing.duration_s,
        repeat=args.repeat or timing.repeat,
        slow_repeat=min(args.repeat or timing.slow_repeat, timing.slow_repeat),
    )
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if unknown := set(targets) - set(TARGETS):
        parser.error(f"unknown targets {', '.join(sorted(unknown))}; choose from {', '.join(TARGETS)}")
    suite_scenarios = [s for s in scenarios(timing) if not args.only or any(o in s.name for o in args.only)]
    suite_scenarios = [s for s in suite_scenarios if set(s.targets) & set(targets)]
    if not suite_scenarios:
        parser.error("no scenario matches --only and --targets (--only matches names like nonstream_c64)")
    suite_scenarios.sort(key=lambda s: s.workers)
    runs, aborted = _run_suite(
        timing, targets, suite_scenarios, args.redis_url, args.concurrency, args.upstream_stream
    )
    _write_results(args, timing, runs, aborted)
    return 1 if aborted else 0


def _run_suite(
    timing: Timing,
    targets: list[str],
    suite: list[Scenario],
    redis_url: str,
    concurrency: int,
    upstream_stream: str,
) -> tuple[list[Run], str | None]:
    """The runs measured, and why the suite stopped early if a process under test died."""
    with tempfile.TemporaryDirectory(prefix="aiorouter-bench-") as workdir:
        upstream = UpstreamProcess(Path(workdir))
        router: RouterProcesses | None = None
        relay: RelayProcess | None = None
        suite_state: Suite | None = None
        try:
            if AIOROUTER in targets:
                router = RouterProcesses(
                    Path(workdir),
                    redis_url,
                    upstream.base_url,
                    router_models(suite),
                    concurrency,
                    upstream_stream,
                )
            if RELAY in targets:
                relay = RelayProcess(Path(workdir), upstream.base_url)
            suite_state = Suite(timing, targets, upstream, router, relay, redis_pid(redis_url))
            for scenario in suite:
                suite_state.run_scenario(scenario)
            return suite_state.runs, None
        except ProcessDied as exc:
            print(f"\nstopping the suite early: {exc}", file=sys.stderr)
            return (suite_state.runs if suite_state is not None else []), str(exc)
        finally:
            if suite_state is not None:
                suite_state.close()
            if relay is not None:
                relay.stop()
            if router is not None:
                router.stop()
            upstream.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _serve(redis_url: str, concurrency: int, workers: int, upstream_stream: str) -> None:
    models = router_models(scenarios(FULL))
    with (
        tempfile.TemporaryDirectory(prefix="aiorouter-bench-") as workdir,
        serving_stack(Path(workdir), redis_url, models, concurrency, workers, upstream_stream) as stack,
    ):
        upstream, relay, router = stack.upstream, stack.relay, stack.router
        pids = " ".join(f"{name}={pid}" for name, pid in router.pids.items())
        print(f"upstream   {upstream.base_url} (pid {upstream.child.pid})")
        print(f"relay      {relay.base_url} (pid {relay.child.pid})")
        print(f"aiorouter  {router.base_url}  key {router.api_key}  pids {pids}")
        print(f"logs       {workdir}")
        for public_id, upstream_model in models.items():
            print(f"model      {public_id:<40} -> {upstream_model}")
        watch = " ".join(f"--watch {name}={pid}" for name, pid in router.pids.items())
        example = f"--url {router.base_url} --api-key {router.api_key} --model {next(iter(models))}"
        print(f"\ntry: python -m bench.loadgen {example} --tokens 16 --clients 64 {watch}", flush=True)
        stop_signals = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        signal.sigwait(stop_signals)


def _write_results(args: argparse.Namespace, timing: Timing, runs: list[Run], aborted: str | None) -> None:
    machine = describe_machine(args.redis_url)
    config = asdict(timing) | {
        "command": args.command_line,
        "aborted": aborted,
        "targets": args.targets,
        "upstream_stream": args.upstream_stream,
    }
    rows = summarize(runs)
    checks = check_targets(runs)
    comparisons = compare_with_relay(runs)
    breakdown = time_breakdown(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d-%H%M")
    document = {
        "machine": machine,
        "config": config,
        "targets": [asdict(c) for c in checks],
        "relay_comparison": [asdict(c) for c in comparisons],
        "time_breakdown": breakdown,
        "summary": rows,
        "runs": runs,
    }
    json_path = args.out / f"{stamp}-{args.name}.json"
    json_path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    markdown = render(machine, config, rows, checks, comparisons, breakdown)
    (args.out / "latest.md").write_text(markdown)
    print(f"\nwrote {json_path} and {args.out / 'latest.md'}\n\n{markdown}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)  # stop the children in the `finally` blocks, as Ctrl-C does
    try:
        status = main()
    except KeyboardInterrupt:
        status = 130
    raise SystemExit(status)
