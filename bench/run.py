"""``chatctl bench``: what the service does under load, measured end to end through the API.

By default it starts its own 3-node cluster in a temporary folder (real
``chatnode`` processes, fsync on) so the figures come from one command;
``--use-cluster`` measures the ``--cluster`` members instead (throughput,
delivery and scale; failover too with ``--node-control CMD``, the operator's
way to signal and start a node, e.g. ``deploy/cluster.sh signal HOSTS_FILE``;
memory needs the processes). With ``--tls`` its own cluster serves mutual TLS
only and every channel of the bench presents a certificate (bench.tls).

Parts, in the order they run on one cluster:

- ``scale`` (opt-in), first point: sequential latency with ~1,000 stored;
- ``throughput``: committed messages/s, p50/p99, the leader's fsyncs per 1,000
  messages and the entries per write on its peer streams, at each concurrency
  level (one channel per client), on each path of ``--paths``: ``stream`` (the
  library's Session stream, the default) and ``unary`` (a SendMessage call each);
- ``delivery``: send-to-subscriber latency with 8 concurrent senders;
- ``memory``: RSS of every node once 100,000 messages are stored;
- ``failover``: kill -9 and SIGSTOP of the leader, median of 5 runs each;
- ``scale``, second point: sequential latency with 1,000,000 stored;
- ``catchup`` (opt-in): the longest stall of acknowledged writes while a
  follower catches up by snapshot on a state of 1 GiB (see bench.catchup);
- ``recovery`` (opt-in): how long a follower takes to serve and to be in sync
  again, and its peak RSS, restarted on 1,000,000 stored messages and 100,000
  log entries, and wiped and added back empty (see bench.recovery).

Memory runs before failover so RSS is read from processes that lived through
the whole load, not from freshly restarted ones. Catchup runs last: its
gigabyte would weigh on every figure taken after it, and its nodes keep a short
log (``--log-keep-entries``, stated in the report), which the other parts then
share. Recovery's nodes keep a long log instead, so it cannot share a run with
catchup; it runs last as it leaves a member rebuilt from a snapshot.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import grpc

from bench.catchup import measure_catchup
from bench.delivery import measure_delivery
from bench.failover import measure_failover
from bench.load import CpuProbe, Fleet, measure, send_load
from bench.nodes import (
    HEARTBEAT_MS,
    LEASE_MS,
    NODE_ARGS,
    Controllable,
    RemoteNode,
    remote_nodes,
    wait_until_healthy,
)
from bench.plan import Plan, plan_from_args
from bench.recovery import measure_recovery
from bench.report import Report, as_json, render, side_by_side_lines
from bench.storage import (
    ScalePoint,
    measure_memory,
    measure_scale_large,
    rss_mib,
    sequential_point,
)
from bench.tls import make_tls
from chatnode.local_cluster import NodeProcess, local_cluster
from proto.credentials import ADMIN_ROLE, ClusterSecret, Metadata


class BenchError(Exception):
    """The bench could not finish: chatctl prints it as one line and exits 1."""


def _node_args(plan: Plan) -> tuple[str, ...]:
    """The bench's own nodes' flags: with catchup, a log short enough that its load
    compacts it past the follower it stops, so that follower needs a snapshot; with
    recovery, a log as long as the restarted node is to hold."""
    if plan.log_keep_entries is None:
        return NODE_ARGS
    return (*NODE_ARGS, "--log-keep-entries", str(plan.log_keep_entries))


def _setup(
    plan: Plan, nodes: Sequence[NodeProcess] | None, addresses: Sequence[str], tls: bool
) -> dict:
    where = f"local {len(nodes)}-node cluster" if nodes else "--cluster " + ",".join(addresses)
    keep = plan.log_keep_entries if nodes else None
    return {
        "cluster": where,
        "lease_ms": LEASE_MS if nodes else None,
        "heartbeat_ms": HEARTBEAT_MS if nodes else None,
        "log_keep_entries": keep,  # None: the product's default
        "fsync": "on (SQLite synchronous=FULL)",
        "tls": tls,  # every bench channel, and the nodes' peer streams on its own cluster
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
    operator: Metadata,
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
        # Each client count for every path before the next count: the leader splits its
        # proposal budget between the accounts active in the last 10 s, so a level after a
        # larger one would find its few senders held to the larger one's share.
        report.throughput = [
            await measure(fleet, c, max(plan.messages, c), metrics.get(leader), path, cpu)
            for c in plan.clients
            for path in plan.paths
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
    if "catchup" in plan.parts and nodes:
        report.catchup = await measure_catchup(nodes, fleet, plan)
    if "recovery" in plan.parts and nodes:
        report.recovery = await measure_recovery(nodes, fleet, plan, operator)


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
    operator: Metadata = (),
) -> Report:
    """Run the plan's parts on one cluster; `nodes` is None for a cluster we did not start,
    whose nodes `remote` (from --node-control) may act on. operator is the admin role's
    call metadata on our own cluster (recovery removes and adds a member)."""
    report = Report(_setup(plan, nodes, addresses, credentials is not None))
    started = time.monotonic()
    fleet = Fleet(addresses, credentials)
    try:
        await fleet.follow_leader()
        if nodes:
            await wait_until_healthy(nodes, credentials)  # measure with every node in the ISR
        await _run_parts(plan, fleet, nodes, nodes or remote, report, operator)
    finally:
        await fleet.close()
    report.setup["seconds"] = round(time.monotonic() - started, 1)
    report.setup["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


def _run_own_cluster(plan: Plan, size: int, tls: bool) -> Report:
    """The plan on a cluster of `size` nodes in a temporary folder; with tls, under mutual
    TLS with certificates made there."""
    with tempfile.TemporaryDirectory(prefix="chat-bench-") as tmp:
        root = Path(tmp)
        credentials, node_args = None, None
        if tls:
            certificates = make_tls(root / "tls", range(1, size + 1))
            credentials, node_args = certificates.credentials(), certificates.node_args()
        with local_cluster(
            root, size, _node_args(plan), metrics=True, node_args=node_args, credentials=credentials
        ) as cluster:
            nodes = list(cluster.nodes.values())
            operator = ClusterSecret.load(cluster.secret_file).metadata(ADMIN_ROLE)
            return asyncio.run(
                run(plan, cluster.addresses, nodes, credentials=credentials, operator=operator)
            )


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
            report = _run_own_cluster(plan, args.nodes, args.tls)
    except grpc.aio.AioRpcError as exc:
        raise BenchError(f"bench failed: {exc.code().name}: {exc.details()}") from None
    except RuntimeError as exc:
        raise BenchError(f"bench failed: {exc}") from None
    if args.side_by_side_json:
        print("\n".join(side_by_side_lines(report)))
    else:
        print(as_json(report) if args.json else render(report))
