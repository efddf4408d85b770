"""``chatctl bench``: what the service does under load, measured end to end through the API.

By default it starts its own 3-node cluster in a temporary folder (real
``chatnode`` processes, fsync on) so the figures come from one command;
``--use-cluster`` measures the ``--cluster`` members instead (throughput,
delivery and scale; failover too with ``--node-control CMD``, the operator's
way to signal and start a node, e.g. ``deploy/cluster.sh signal HOSTS_FILE``;
memory needs the processes).

Parts, in the order they run on one cluster:

- ``scale`` (opt-in), first point: sequential latency with ~1,000 stored;
- ``throughput``: committed messages/s, p50/p99, the leader's fsyncs per 1,000
  messages and the entries per write on its peer streams, at each concurrency
  level (one channel per client), on each path of ``--paths``: ``stream`` (the
  library's Session stream, the default) and ``unary`` (a SendMessage call each);
- ``delivery``: send-to-subscriber latency with 8 concurrent senders;
- ``memory``: RSS of every node once 100,000 messages are stored;
- ``failover``: kill -9 and SIGSTOP of the leader, median of 5 runs each;
- ``scale``, second point: sequential latency with 1,000,000 stored.

Memory runs before failover so RSS is read from processes that lived through
the whole load, not from freshly restarted ones.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from bench.delivery import DeliveryResult, measure_delivery
from bench.failover import FailoverResult, FailoverRuns, measure_failover
from bench.load import PATHS, CpuProbe, Fleet, LoadResult, measure, send_load
from bench.nodes import (
    HEARTBEAT_MS,
    LEASE_MS,
    NODE_ARGS,
    Controllable,
    RemoteNode,
    remote_nodes,
    wait_until_healthy,
)
from bench.storage import (
    MemoryResult,
    ScalePoint,
    ScaleResult,
    measure_memory,
    measure_scale_large,
    rss_mib,
    sequential_point,
)
from chatnode.local_cluster import NodeProcess, local_cluster

PARTS = ("throughput", "delivery", "memory", "failover", "scale")
LOCAL_ONLY = frozenset({"memory", "failover"})
OPT_IN = frozenset({"scale"})
DEFAULT_PARTS = tuple(p for p in PARTS if p not in OPT_IN)


class BenchError(Exception):
    """The bench could not finish: chatctl prints it as one line and exits 1."""


@dataclass(frozen=True, slots=True)
class Plan:
    """Sizes of one bench run; QUICK shrinks them to a run of seconds (the test's)."""

    parts: tuple[str, ...] = DEFAULT_PARTS
    paths: tuple[str, ...] = ("stream",)  # throughput: the product's own path
    clients: tuple[int, ...] = (1, 8, 32, 128)
    messages: int = 3_000  # per throughput level
    warmup: int = 200
    delivery_senders: int = 8
    delivery_per_sender: int = 100
    failover_runs: int = 5
    memory_messages: int = 100_000
    scale_small: int = 1_000
    scale_messages: int = 1_000_000
    scale_samples: int = 500
    # Concurrency of bulk loads (memory, scale). More does not load faster: past
    # ~128 the leader's one event loop is saturated (about 1,300 msg/s on 2 cores).
    load_clients: int = 128


QUICK = {
    "clients": (1, 8),
    "messages": 200,
    "warmup": 50,
    "delivery_per_sender": 10,
    "failover_runs": 1,
    "memory_messages": 2_000,
    "scale_small": 300,
    "scale_messages": 3_000,
    "scale_samples": 50,
    "load_clients": 32,
}


@dataclass
class Report:
    setup: dict[str, Any]
    throughput: list[LoadResult] | None = None
    delivery: DeliveryResult | None = None
    memory: MemoryResult | None = None
    failover: FailoverResult | None = None
    scale: ScaleResult | None = None


# -- plan from flags --------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The bench's flags, on chatctl's ``bench`` verb."""
    parser.add_argument("--nodes", type=int, default=3, help="size of the local cluster (3)")
    parser.add_argument(
        "--use-cluster", action="store_true", help="measure --cluster instead of a local one"
    )
    parser.add_argument(
        "--parts",
        help="comma-separated: throughput,delivery,memory,failover,scale "
        "(default: all but scale; with --use-cluster: throughput,delivery, and failover "
        "with --node-control)",
    )
    parser.add_argument(
        "--node-control",
        metavar="CMD",
        help="with --use-cluster: a command run as `CMD ID KILL|STOP|CONT|start` that acts on "
        "node ID, for the failover part (e.g. 'deploy/cluster.sh signal HOSTS_FILE')",
    )
    parser.add_argument("--scale", action="store_true", help="add the (long) scale part")
    parser.add_argument("--quick", action="store_true", help="small sizes: a run of seconds")
    parser.add_argument("--clients", help="throughput concurrency levels (1,8,32,128)")
    parser.add_argument(
        "--paths",
        help="throughput over: stream (the library's Session stream), unary (one SendMessage "
        "call each), or both, comma-separated (default: stream)",
    )
    parser.add_argument("--unary", action="store_true", help="the same as --paths unary")
    parser.add_argument("--messages", type=int, help="messages per throughput level (3000)")
    parser.add_argument("--failover-runs", type=int, help="runs per failover kind (5)")
    parser.add_argument("--memory-messages", type=int, help="stored messages for RSS (100000)")
    parser.add_argument("--scale-messages", type=int, help="stored messages, scale part (1000000)")
    parser.add_argument("--load-clients", type=int, help="concurrency of bulk loads (128)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--side-by-side-json",
        action="store_true",
        help="only one JSON line per throughput level (system, conc, n, rate, p50, p99), "
        "as ../shared/bench/side-by-side.sh's CHAT_EXTRA_LOAD prints",
    )


def _parts(args: argparse.Namespace) -> tuple[str, ...]:
    if args.parts:
        chosen = {p.strip() for p in args.parts.split(",") if p.strip()}
    else:
        chosen = set(DEFAULT_PARTS) - (LOCAL_ONLY if args.use_cluster else set())
        if args.use_cluster and args.node_control:
            chosen.add("failover")
    if args.scale:
        chosen.add("scale")
    return tuple(p for p in PARTS if p in chosen)


def check_usage(
    parser: argparse.ArgumentParser, args: argparse.Namespace, ids: dict[int, str]
) -> None:
    """Refuse bad bench flags with exit 2 before any cluster starts; ids are --cluster's
    members by id."""
    if args.parts:
        unknown = {p.strip() for p in args.parts.split(",")} - set(PARTS) - {""}
        if unknown:
            parser.error(f"unknown bench part(s) {', '.join(sorted(unknown))}: choose {PARTS}")
    local = LOCAL_ONLY - ({"failover"} if args.node_control else set())
    if args.use_cluster and (needed := local & set(_parts(args))):
        parser.error(
            f"{', '.join(sorted(needed))} need the bench's own cluster (failover: or "
            "--node-control): drop --use-cluster"
        )
    if args.node_control and not args.use_cluster:
        parser.error("--node-control acts on --cluster's nodes: add --use-cluster")
    if args.node_control and not ids:
        parser.error("--node-control needs --cluster with ids (ID=HOST:PORT,...)")
    numbers = ("nodes", "messages", "failover_runs", "memory_messages", "scale_messages")
    for name in (*numbers, "load_clients"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    try:
        _clients(args.clients)
    except ValueError:
        parser.error(f"--clients wants positive integers, comma-separated, not {args.clients!r}")
    if unknown_paths := set(_paths(args) or ()) - set(PATHS):
        parser.error(f"unknown path(s) {', '.join(sorted(unknown_paths))}: choose {PATHS}")
    if args.unary and args.paths:
        parser.error("--unary is --paths unary: give one of them")


def _paths(args: argparse.Namespace) -> tuple[str, ...] | None:
    if args.unary:
        return ("unary",)
    if not args.paths:
        return None
    return tuple(dict.fromkeys(p.strip() for p in args.paths.split(",") if p.strip()))


def _clients(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    levels = tuple(int(c) for c in text.split(","))
    if not levels or min(levels) < 1:
        raise ValueError(text)
    return levels


def plan_from_args(args: argparse.Namespace) -> Plan:
    """Defaults, then --quick, then each explicit flag."""
    plan = dataclasses.replace(Plan(parts=_parts(args)), **(QUICK if args.quick else {}))
    explicit = {
        "paths": _paths(args),
        "clients": _clients(args.clients),
        "messages": args.messages,
        "failover_runs": args.failover_runs,
        "memory_messages": args.memory_messages,
        "scale_messages": args.scale_messages,
        "load_clients": args.load_clients,
    }
    return dataclasses.replace(plan, **{k: v for k, v in explicit.items() if v is not None})


# -- running -----------------------------------------------------------------------------------


def _setup(plan: Plan, nodes: Sequence[NodeProcess] | None, addresses: Sequence[str]) -> dict:
    where = f"local {len(nodes)}-node cluster" if nodes else "--cluster " + ",".join(addresses)
    return {
        "cluster": where,
        "lease_ms": LEASE_MS if nodes else None,
        "heartbeat_ms": HEARTBEAT_MS if nodes else None,
        "fsync": "on (SQLite synchronous=FULL)",
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "parts": list(plan.parts),
        "plan": {k: v for k, v in dataclasses.asdict(plan).items() if k != "parts"},
    }


async def _run_parts(
    plan: Plan,
    fleet: Fleet,
    nodes: Sequence[NodeProcess] | None,
    controlled: Sequence[Controllable] | None,
    report: Report,
) -> None:
    metrics = {n.address: n.metrics_url for n in nodes or ()}
    cpu = _cpu_probe(nodes, fleet) if nodes else None
    at_start = rss_mib(nodes) if nodes else {}
    await send_load(fleet, 4, plan.warmup, plan.paths[0])  # connections, sign-ins, page cache
    small: ScalePoint | None = None
    if "scale" in plan.parts:
        small = await sequential_point(
            fleet, plan.scale_small, plan.scale_samples, plan.load_clients
        )
    if "throughput" in plan.parts:
        leader = await fleet.follow_leader()
        report.throughput = [
            await measure(fleet, c, max(plan.messages, c), metrics.get(leader), path, cpu)
            for path in plan.paths
            for c in plan.clients
        ]
    if "delivery" in plan.parts:
        await fleet.follow_leader()
        report.delivery = await measure_delivery(
            fleet, plan.delivery_senders, plan.delivery_per_sender, plan.paths[0]
        )
    if "memory" in plan.parts and nodes:
        report.memory = await measure_memory(
            nodes, fleet, at_start, plan.memory_messages, plan.load_clients
        )
    if "failover" in plan.parts and controlled:
        report.failover = await measure_failover(controlled, fleet, plan.failover_runs)
    if small is not None:
        report.scale = await measure_scale_large(
            fleet, small, plan.scale_messages, plan.scale_samples, plan.load_clients
        )


def _cpu_probe(nodes: Sequence[NodeProcess], fleet: Fleet) -> CpuProbe:
    def probe() -> dict[str, float]:
        leader = next(n for n in nodes if n.address == fleet.leader)
        followers = [n.cpu_seconds() for n in nodes if n is not leader]
        return {
            "leader": leader.cpu_seconds(),
            "follower": sum(followers) / max(1, len(followers)),
            "client": time.process_time(),
        }

    return probe


async def run(
    plan: Plan,
    addresses: Sequence[str],
    nodes: Sequence[NodeProcess] | None,
    remote: Sequence[RemoteNode] | None = None,
    credentials: grpc.ChannelCredentials | None = None,
) -> Report:
    """Run the plan's parts on one cluster; `nodes` is None for a cluster we did not start,
    whose nodes `remote` (from --node-control) may act on."""
    report = Report(_setup(plan, nodes, addresses))
    started = time.monotonic()
    fleet = Fleet(addresses, credentials)
    try:
        await fleet.follow_leader()
        if nodes:
            await wait_until_healthy(nodes, credentials)  # measure with every node in the ISR
        await _run_parts(plan, fleet, nodes, nodes or remote, report)
    finally:
        await fleet.close()
    report.setup["seconds"] = round(time.monotonic() - started, 1)
    report.setup["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


def main(
    args: argparse.Namespace,
    addresses: Sequence[str],
    ids: dict[int, str],
    credentials: grpc.ChannelCredentials | None,
) -> None:
    """The ``bench`` verb: run, then print the report (text or --json). On --cluster's
    members (``addresses``, ``ids``) with --use-cluster, else on a local cluster of its own;
    every channel, to either, with ``credentials``."""
    plan = plan_from_args(args)
    try:
        if args.use_cluster:
            remote = remote_nodes(ids, args.node_control) if args.node_control else None
            report = asyncio.run(run(plan, addresses, None, remote, credentials))
        else:
            with (
                tempfile.TemporaryDirectory(prefix="chat-bench-") as tmp,
                local_cluster(Path(tmp), args.nodes, NODE_ARGS, metrics=True) as cluster,
            ):
                nodes = list(cluster.nodes.values())
                report = asyncio.run(run(plan, cluster.addresses, nodes))
    except grpc.aio.AioRpcError as exc:
        raise BenchError(f"bench failed: {exc.code().name}: {exc.details()}") from None
    except RuntimeError as exc:
        raise BenchError(f"bench failed: {exc}") from None
    if args.side_by_side_json:
        print("\n".join(side_by_side_lines(report)))
    else:
        print(as_json(report) if args.json else render(report))


# -- output ---------------------------------------------------------------------------------


def as_json(report: Report) -> str:
    return json.dumps(dataclasses.asdict(report), indent=2)


def side_by_side_lines(report: Report) -> list[str]:
    """One JSON line per throughput level and path in ../shared/bench/load.py's form
    (system chat-stream or chat-unary), so the bench can be side-by-side.sh's
    CHAT_EXTRA_LOAD (``--clients $CONC``)."""
    rows = [
        {"system": f"chat-{r.path}", "conc": r.clients, "n": r.messages, "rate": r.per_second,
         "p50": r.p50_ms, "p99": r.p99_ms}
        for r in report.throughput or ()
    ]  # fmt: skip
    return [json.dumps(row) for row in rows]


def _render_throughput(results: list[LoadResult]) -> list[str]:
    lines = [
        "throughput: committed messages, one channel per client "
        "(stream: the library's Session stream; unary: a SendMessage call each)",
        f"{'path':>6}  {'clients':>7}  {'msgs':>6}  {'msg/s':>8}  {'p50 ms':>7}  {'p99 ms':>7}  "
        "fsyncs/1000  msgs/peer write  CPU ms/msg leader/follower/client",
    ]
    for r in results:
        fsyncs = "-" if r.fsyncs_per_1000 is None else f"{r.fsyncs_per_1000:.1f}"
        per_write = "-" if r.entries_per_peer_write is None else f"{r.entries_per_peer_write:.2f}"
        cpu = r.cpu_ms_per_message
        cpu_text = (
            "-" if cpu is None else "/".join(f"{cpu[k]:.3f}" for k in sorted(cpu, key=_role_order))
        )
        lines.append(
            f"{r.path:>6}  {r.clients:>7}  {r.messages:>6}  {r.per_second:>8.1f}  "
            f"{r.p50_ms:>7.2f}  {r.p99_ms:>7.2f}  {fsyncs:>11}  {per_write:>15}  {cpu_text}"
        )
    return lines


def _role_order(role: str) -> int:
    return ("leader", "follower", "client").index(role)


def _render_delivery(d: DeliveryResult) -> list[str]:
    return [
        f"live delivery: {d.senders} concurrent senders ({d.path}), each to its own subscribed "
        f"recipient, {d.messages} messages",
        f"  send start -> on the recipient's stream: p50 {d.send_to_stream_p50_ms:.2f} ms  "
        f"p99 {d.send_to_stream_p99_ms:.2f} ms",
        f"  sender's reply -> on the stream:         p50 {d.reply_to_stream_p50_ms:.2f} ms  "
        f"p99 {d.reply_to_stream_p99_ms:.2f} ms (negative: the stream was first)",
    ]


def _render_memory(m: MemoryResult) -> list[str]:
    nodes = "  ".join(
        f"node {i}: {mib:.1f} MiB (at start {m.rss_mib_at_start.get(i, 0):.1f})"
        for i, mib in m.rss_mib.items()
    )
    return [
        f"memory: RSS after {m.stored_messages:,} stored messages "
        f"(loaded at {m.load_per_second:,.0f} msg/s)",
        f"  {nodes}",
    ]


def _render_runs(r: FailoverRuns) -> str:
    runs = " ".join(f"{t:.0f}" for t in r.runs_ms)
    line = f"  {r.signal:<8} median {r.median_ms:>7.1f} ms  (runs: {runs})"
    line += f"; status bar not 'connected' median {r.status_bar_median_ms:.0f} ms"
    if r.stale_acks is not None:
        line += f"; writes acked by the old leader after SIGCONT: {r.stale_acks}"
        line += f" of {len(r.stale_outcomes or [])}"
    return line


def _render_failover(f: FailoverResult) -> list[str]:
    return [
        "failover: signal to the leader -> next write acknowledged by another node "
        f"(client retries, {f.attempt_timeout_ms} ms per attempt)",
        _render_runs(f.kill),
        _render_runs(f.stop),
    ]


def _render_scale(s: ScaleResult) -> list[str]:
    def point(p: ScalePoint) -> str:
        return (
            f"  at {p.stored_messages:>9,} stored: p50 {p.p50_ms:.2f} ms  p99 {p.p99_ms:.2f} ms "
            f"({p.samples} sequential sends)"
        )

    return [
        f"scale: sequential SendMessage latency (bulk load between: {s.load_clients} clients, "
        f"{s.load_per_second:,.0f} msg/s)",
        point(s.small),
        point(s.large),
    ]


def render(report: Report) -> str:
    setup = report.setup
    lines = [
        f"chatctl bench: {setup['cluster']} (lease {setup['lease_ms']} ms, heartbeat "
        f"{setup['heartbeat_ms']} ms, fsync on), {setup['cpus']} CPUs, Python {setup['python']}, "
        f"load average {setup['load_average_at_start'][0]} at start, "
        f"{setup['load_average_at_end'][0]} at end, took {setup['seconds']} s",
    ]
    sections = [
        (report.throughput, _render_throughput),
        (report.delivery, _render_delivery),
        (report.memory, _render_memory),
        (report.failover, _render_failover),
        (report.scale, _render_scale),
    ]
    for result, render_part in sections:
        if result is not None:
            lines += ["", *render_part(result)]
    return "\n".join(lines)
