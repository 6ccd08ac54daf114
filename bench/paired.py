"""Two builds compared on one noisy machine: one client alternates single requests between two running
stacks, in random order, so each pair meets the same moment of the machine.

On a shared VM two runs of the same build a few minutes apart can differ by tens of percent; a change of
a few hundred microseconds is lost in that.  Here the two stacks (the old build and the new one, each
started with ``python -m bench.run --serve``) run side by side and only one request is in flight at a
time, so the difference of each pair is the two builds' difference at that moment.

    python -m bench.paired --a URL KEY --b URL KEY [--model bench/sim-tokens-50 --tokens 50 --stream]
                           [--pairs 1500] [--gap 0.0] [--json]

Prints, per stack, the p50 and p90 of the time to the first content (a stream's first content chunk; a
JSON answer's whole body) and of the whole response, and the median of the pairs' differences (A less B:
above 0 means B is faster).  Every answer is checked whole; a failed request stops the run.  ``--gap``
waits that many seconds after each request (idle processes, as at a low request rate).  bench/README.md
has the recipe.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
from dataclasses import dataclass, field
from time import perf_counter

import orjson

from bench.http_client import Connection, Exchange, InFlight, connect
from bench.loadgen import LoadRun, LoadSpec

WARMUP_PAIRS = 20
TIMEOUT_S = 30.0


@dataclass
class Side:
    """One stack: where it is, its connection, and each request's (first byte, whole) in milliseconds."""

    name: str
    spec: LoadSpec
    connection: Connection | None = None
    samples: list[tuple[float, float]] = field(default_factory=list)

    async def one(self, run: LoadRun, in_flight: InFlight) -> tuple[float, float]:
        """One checked request of ``run`` (the load generator's request and expected answer)."""
        if self.connection is None or not self.connection.usable:
            self.connection = await connect(run.host, run.port)
        exchange = Exchange(run.loop, self.spec.stream, run.expected, perf_counter(), in_flight)
        self.connection.send(run.request, exchange, TIMEOUT_S)
        await exchange.future
        if exchange.error is not None:
            raise RuntimeError(f"stack {self.name}: {exchange.error} {exchange.error_detail}".rstrip())
        return (
            (exchange.first_chunk_at - exchange.started_at) * 1000,
            (exchange.finished_at - exchange.started_at) * 1000,
        )


def _p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


async def compare(a: Side, b: Side, pairs: int, gap: float, seed: int = 0) -> dict[str, object]:
    """Run ``pairs`` pairs (after a warm-up) and summarise them."""
    runs = {a.name: LoadRun(a.spec), b.name: LoadRun(b.spec)}
    in_flight = InFlight()
    order = random.Random(seed)
    for counted in (False, True):
        for _ in range(pairs if counted else WARMUP_PAIRS):
            sides = [a, b]
            order.shuffle(sides)
            for side in sides:
                sample = await side.one(runs[side.name], in_flight)
                if counted:
                    side.samples.append(sample)
                if gap:
                    await asyncio.sleep(gap)
    for side in (a, b):
        if side.connection is not None:
            side.connection.close()
    report: dict[str, object] = {"pairs": pairs, "gap_s": gap}
    for side in (a, b):
        first = [s[0] for s in side.samples]
        whole = [s[1] for s in side.samples]
        report[side.name] = {
            "first_content_ms": {"p50": round(_p(first, 50), 3), "p90": round(_p(first, 90), 3)},
            "whole_ms": {"p50": round(_p(whole, 50), 3), "p90": round(_p(whole, 90), 3)},
        }
    first_diff = [x[0] - y[0] for x, y in zip(a.samples, b.samples, strict=True)]
    whole_diff = [x[1] - y[1] for x, y in zip(a.samples, b.samples, strict=True)]
    report["a_less_b_ms"] = {
        "first_content_median": round(statistics.median(first_diff), 3),
        "whole_median": round(statistics.median(whole_diff), 3),
    }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", nargs=2, metavar=("URL", "KEY"), required=True, help="the first stack")
    parser.add_argument("--b", nargs=2, metavar=("URL", "KEY"), required=True, help="the second stack")
    parser.add_argument("--model", default="bench/sim-tokens-50")
    parser.add_argument("--tokens", type=int, help="content tokens each answer carries (default: from model)")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--pairs", type=int, default=1500)
    parser.add_argument("--gap", type=float, default=0.0, help="seconds to wait after each request")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    def side(name: str, url: str, key: str) -> Side:
        return Side(
            name, LoadSpec(url, model=args.model, tokens=args.tokens, stream=args.stream, api_key=key)
        )

    report = asyncio.run(compare(side("a", *args.a), side("b", *args.b), args.pairs, args.gap))
    if args.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return
    for name in ("a", "b"):
        figures = report[name]
        assert isinstance(figures, dict)
        first, whole = figures["first_content_ms"], figures["whole_ms"]
        print(f"{name}: first content p50 {first['p50']} p90 {first['p90']} ms, whole p50 {whole['p50']} ms")
    print(f"a less b, median of the pairs: {report['a_less_b_ms']}")


if __name__ == "__main__":
    main()
