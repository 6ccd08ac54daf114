"""Where one client's request spends its time, seen from the wire: which process holds it, and for how long.

``Server-Timing`` tells the request's phases as the ingress and the worker measure them; this tells the
same request from outside every process.  One closed-loop client sends non-stream requests to a target
(``direct``, the upstream itself; ``relay``; ``aiorouter``, 1 ingress + 1 worker) while ``tcpdump``
records every pushed TCP segment on the loopback interface with its time.  Each request is then walked
backwards from the last segment of its response: the process that sent a segment held the request from
the last segment it received before it (its :class:`Hold`), back to the request itself, so the time
between a request's arrival and its answer splits into the holds of the processes it crossed, plus the
load generator's own time until its next request.  Segments nobody waited for (the worker's next move,
rq's bookkeeping after the answer) are left out: only the chain that led to the answer counts.

    sudo .venv/bin/python -m bench.timeline --redis-url redis://127.0.0.1:6501/10 [--seconds 2]

It needs ``tcpdump`` and the right to capture on ``lo`` (root), which the rest of ``bench/`` does not:
it prints why and exits 2 without them.  It writes ``bench/results/<date>-timeline.md``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from bench.processes import serving_stack
from bench.report import describe_machine
from bench.scenarios import FULL, router_models, scenarios

CLIENT = "load generator"
SEGMENT = re.compile(r"^(\d+\.\d+) IP 127\.0\.0\.1\.(\d+) > 127\.0\.0\.1\.(\d+): tcp (\d+)$")
WARMUP_S = 1.0
CAPTURE_FILTER = "tcp and (tcp[tcpflags] & tcp-push != 0)"


@dataclass(frozen=True, slots=True)
class Segment:
    """One pushed TCP segment with data: when it was captured, and from which port to which."""

    at: float
    source: int
    target: int
    size: int


@dataclass(frozen=True, slots=True)
class Hold:
    """A process holding the request: from the segment it received to the one it sent on."""

    process: str
    seconds: float
    received: str  # the sender of the segment that handed it the request
    sent_to: str


@dataclass(frozen=True, slots=True)
class Hop:
    """One step of the most common way: who held the request, from whom, to whom, and the median."""

    process: str
    received: str
    sent_to: str
    us: float


@dataclass(frozen=True, slots=True)
class Summary:
    """One target's requests: how many were walked, the median request in all and per process (a
    process met twice counts both holds), and the most common way with the share of requests on it."""

    requests: int
    cycle_us: float | None
    per_process_us: dict[str, float]
    chain: list[Hop]
    chain_share: float


def parse_capture(lines: Iterable[str]) -> list[Segment]:
    """The segments with data in ``tcpdump -nn -tt -q`` lines, in capture order."""
    segments = []
    for line in lines:
        match = SEGMENT.match(line.strip())
        if match is not None and int(match[4]) > 0:
            segments.append(Segment(float(match[1]), int(match[2]), int(match[3]), int(match[4])))
    return segments


def request_chains(segments: Sequence[Segment], front: int, owners: Mapping[int, str]) -> list[list[Hold]]:
    """Each request's holds in the order the request met them, ending with the load generator's wait
    until its next request; a port no process of ``owners`` has is the load generator's.  A request
    is a segment to ``front``; its response the last segment back before the next request."""
    starts = [index for index, segment in enumerate(segments) if segment.target == front]
    chains = []
    for request, following in itertools.pairwise(starts):
        answers = [i for i in range(request + 1, following) if segments[i].source == front]
        if not answers:
            continue
        chain = _walk_back(segments, request, answers[-1], owners)
        if chain is None:
            continue
        idle = segments[following].at - segments[answers[-1]].at
        chains.append([*chain, Hold(CLIENT, idle, _owner(owners, front), _owner(owners, front))])
    return chains


def _walk_back(
    segments: Sequence[Segment], request: int, answer: int, owners: Mapping[int, str]
) -> list[Hold] | None:
    holds: list[Hold] = []
    current = answer
    while current != request:
        holder = _owner(owners, segments[current].source)
        previous = next(
            (i for i in range(current - 1, request - 1, -1) if _owner(owners, segments[i].target) == holder),
            None,
        )
        if previous is None:
            return None  # the holder received nothing since the request: not a chain this tool knows
        seconds = segments[current].at - segments[previous].at
        giver = _owner(owners, segments[previous].source)
        holds.append(Hold(holder, seconds, giver, _owner(owners, segments[current].target)))
        current = previous
    holds.reverse()
    return holds


def _owner(owners: Mapping[int, str], port: int) -> str:
    return owners.get(port, CLIENT)


def summarize(chains: Sequence[list[Hold]]) -> Summary:
    """Medians in microseconds of ``chains`` (see :class:`Summary`)."""
    per_process: dict[str, list[float]] = defaultdict(list)
    cycles = []
    for chain in chains:
        totals: dict[str, float] = defaultdict(float)
        for hold in chain:
            totals[hold.process] += hold.seconds
        for process, seconds in totals.items():
            per_process[process].append(seconds * 1e6)
        cycles.append(sum(totals.values()) * 1e6)
    shapes = Counter(_shape(chain) for chain in chains)
    common, count = shapes.most_common(1)[0] if shapes else ((), 0)
    hops: list[list[float]] = [[] for _ in common]
    for chain in chains:
        if _shape(chain) == common:
            for index, hold in enumerate(chain):
                hops[index].append(hold.seconds * 1e6)
    return Summary(
        requests=len(chains),
        cycle_us=round(statistics.median(cycles), 1) if cycles else None,
        per_process_us={p: round(statistics.median(v), 1) for p, v in per_process.items()},
        chain=[
            Hop(process, giver, target, round(statistics.median(values), 1))
            for (process, giver, target), values in zip(common, hops, strict=True)
        ],
        chain_share=round(count / len(chains), 3) if chains else 0.0,
    )


def _shape(chain: Sequence[Hold]) -> tuple[tuple[str, str, str], ...]:
    return tuple((hold.process, hold.received, hold.sent_to) for hold in chain)


def socket_owners(pids: Mapping[str, int]) -> dict[int, str]:
    """Local TCP ports of the sockets each process in ``pids`` has open, to its label (from /proc)."""
    inodes: dict[int, str] = {}
    for label, pid in pids.items():
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for name in names:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{name}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes[int(link[8:-1])] = label
    owners: dict[int, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            inode = int(fields[9])
            if inode in inodes:
                owners[int(fields[1].rsplit(":", 1)[1], 16)] = inodes[inode]
    return owners


def capture(seconds: float, load: list[str]) -> list[Segment]:
    """Run ``load`` (a load generator command line) and capture ``seconds`` of loopback traffic once
    its warm-up is over."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        loadgen = subprocess.Popen(load, stdout=subprocess.DEVNULL)
        try:
            time.sleep(WARMUP_S)
            argv = ["tcpdump", "-i", "lo", "-nn", "-tt", "-q", "-l", CAPTURE_FILTER]
            dump = subprocess.Popen(argv, stdout=out, stderr=err)
            time.sleep(seconds)
            dump.terminate()
            dump.wait(10)
        finally:
            loadgen.wait(60)
        out.seek(0)
        return parse_capture(out)


def loadgen_command(base_url: str, model: str, api_key: str | None, seconds: float) -> list[str]:
    argv = [sys.executable, "-m", "bench.loadgen", "--url", base_url, "--model", model, "--tokens", "16"]
    argv += ["--clients", "1", "--duration", str(seconds + 1.0), "--warmup", str(WARMUP_S)]
    return argv + (["--api-key", api_key] if api_key else [])


def render(machine: Mapping[str, object], results: Mapping[str, Summary], command: str) -> str:
    """The Markdown page: the holds per process of every target side by side, then each target's way."""
    processes = ["ingress", "relay", "redis", "worker", "upstream", CLIENT]
    lines = [
        f"# Where one client's request spends its time, {machine['date']}",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, Linux {machine['kernel']}, Python "
        f"{machine['python']}, Redis {machine['redis']}; commit {machine['commit']}. Command: `{command}`.",
        "One closed-loop client, non-stream requests of 16 tokens; `tcpdump` on loopback. Each request is "
        "walked back from its answer: a process holds it from the segment that reached it to the one it "
        "sent on. Medians in microseconds; the load generator's hold is its own time until its next "
        "request (`bench/timeline.py`).",
        "",
        "| process | " + " | ".join(results) + " |",
        "| --- |" + " ---: |" * len(results),
    ]
    for process in processes:
        cells = [_us(summary.per_process_us.get(process)) for summary in results.values()]
        if any(cell != "-" for cell in cells):
            lines.append(f"| {process} | " + " | ".join(cells) + " |")
    lines.append("| one request, in all | " + " | ".join(_us(s.cycle_us) for s in results.values()) + " |")
    lines.append("| requests walked | " + " | ".join(str(s.requests) for s in results.values()) + " |")
    for target, summary in results.items():
        lines += ["", f"## {target}: the request's way ({summary.chain_share:.0%} of requests took it)", ""]
        lines += ["| holds it | from | sends to | median µs |", "| --- | --- | --- | ---: |"]
        lines += [f"| {h.process} | {h.received} | {h.sent_to} | {h.us:.1f} |" for h in summary.chain]
    return "\n".join(lines) + "\n"


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--seconds", type=float, default=2.0, help="captured seconds per target")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    if shutil.which("tcpdump") is None or os.geteuid() != 0:
        print("bench.timeline needs tcpdump on PATH and root, to capture on lo", file=sys.stderr)
        return 2
    redis_port = urlsplit(args.redis_url).port or 6379
    models = router_models(scenarios(FULL))
    results: dict[str, Summary] = {}
    with (
        tempfile.TemporaryDirectory(prefix="aiorouter-timeline-") as workdir,
        serving_stack(Path(workdir), args.redis_url, models, concurrency=4096, workers=1) as stack,
    ):
        upstream, relay, router = stack.upstream, stack.relay, stack.router
        pids = {
            "upstream": upstream.child.pid,
            "relay": relay.child.pid,
            "ingress": router.ingress.pid,
            "worker": router.workers[0].pid,
        }
        targets = {
            "direct": (upstream.base_url, "sim", None),
            "relay": (relay.base_url, "sim", None),
            "aiorouter": (router.base_url, next(iter(models)), router.api_key),
        }
        for name, (base_url, model, key) in targets.items():
            segments = capture(args.seconds, loadgen_command(base_url, model, key, args.seconds))
            # Read right after this target's capture, while its keep-alive connections are open: a
            # port an earlier target's connection used may be the load generator's now.
            owners = {redis_port: "redis", **socket_owners(pids)}
            front = urlsplit(base_url).port or 80
            results[name] = summarize(request_chains(segments, front, owners))
    markdown = render(
        describe_machine(args.redis_url),
        results,
        " ".join(["python -m bench.timeline", *(argv or sys.argv[1:])]),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{datetime.now(UTC).strftime('%Y-%m-%d-%H%M')}-timeline.md"
    path.write_text(markdown)
    print(f"wrote {path}\n\n{markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
