"""A flood of wrong-password Logins against the leader of three real processes.

Password checks run in a bounded pool off the event loop, so the flood is shed
with RESOURCE_EXHAUSTED rather than queued, the leader keeps its heartbeats on
time (no failover, the in-sync set stays whole) and a writer's messages go
through. ``pytest -s`` prints the writer's latency and how many logins were shed.
Heartbeats on time: no follower saw a gap of more than three heartbeats between
Appends from its leader (``chat_follower_heartbeat_gap_seconds``).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from pathlib import Path

import grpc

from chatnode.local_cluster import Cluster, NodeProcess, local_cluster
from proto import chat_pb2 as pb
from proto import chat_pb2_grpc
from tests.support.nodes import PASSWORD

CODE = grpc.StatusCode
LOGINS = 200
BASELINE_SENDS = 30
MIN_SENDS = 20
LATE_S = 0.3  # heartbeats go every 0.1 s; a lease is 1 s. A bucket bound of the metric.


class StatusWatch:
    """Polls GetClusterStatus on every node; records every (term, leader) and whether
    the leader ever reported a member out of sync or unreachable."""

    def __init__(self, channels: dict[int, grpc.aio.Channel]) -> None:
        self._stubs = {i: chat_pb2_grpc.ChatServiceStub(c) for i, c in channels.items()}
        self.views: set[tuple[int, int]] = set()
        self.degraded: list[str] = []
        self.polls = 0
        self.stop = asyncio.Event()

    async def run(self) -> None:
        while not self.stop.is_set():
            for node_id, stub in self._stubs.items():
                status = await stub.GetClusterStatus(pb.GetClusterStatusRequest(), timeout=5)
                self.views.add((status.term, status.leader_id))
                if status.role == "leader":
                    lagging = [m.id for m in status.members if not (m.in_sync and m.reachable)]
                    if lagging:
                        self.degraded.append(f"node {node_id} reported {lagging} out of sync")
            self.polls += 1
            with contextlib.suppress(TimeoutError):  # poll about every 50 ms until told to stop
                await asyncio.wait_for(self.stop.wait(), timeout=0.05)


def heartbeat_gaps(node: NodeProcess, late_s: float) -> tuple[int, int]:
    """How many of a follower's gaps between Appends from its leader exceeded late_s, of all."""
    buckets = node.metric_samples("chat_follower_heartbeat_gap_seconds_bucket")
    within = next(count for labels, count in buckets.items() if dict(labels)["le"] == str(late_s))
    total = buckets[(("le", "+Inf"),)]
    return int(total - within), int(total)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def test_a_login_flood_is_shed_without_failover_while_a_writer_runs(
    tmp_path: Path,
) -> None:
    with local_cluster(tmp_path, size=3, metrics=True) as cluster:
        leader_id = cluster.wait_for_leader()
        channels = {i: grpc.aio.insecure_channel(n.address) for i, n in cluster.nodes.items()}
        try:
            await flood(cluster, channels, leader_id)
        finally:
            for channel in channels.values():
                await channel.close()


async def flood(cluster: Cluster, channels: dict[int, grpc.aio.Channel], leader_id: int) -> None:
    stub = chat_pb2_grpc.ChatServiceStub(channels[leader_id])
    for name in ("writer", "reader", "victim"):
        await stub.CreateAccount(pb.CreateAccountRequest(username=name, password=PASSWORD))
    login = await stub.Login(pb.LoginRequest(username="writer", password=PASSWORD), timeout=10)
    auth = (("authorization", f"Bearer {login.session_token}"),)

    async def send(i: int) -> float:
        start = time.perf_counter()
        request = pb.SendMessageRequest(recipient="reader", body=f"m{i}", request_id=f"w{i}")
        await stub.SendMessage(request, metadata=auth, timeout=10)
        return time.perf_counter() - start

    baseline = [await send(i) for i in range(BASELINE_SENDS)]
    watch = StatusWatch(channels)
    watching = asyncio.ensure_future(watch.run())
    before = await stub.GetClusterStatus(pb.GetClusterStatusRequest(), timeout=5)

    async def wrong_login(i: int) -> grpc.StatusCode:
        name = "victim" if i % 2 else f"nobody{i}"
        request = pb.LoginRequest(username=name, password="wrong password")
        try:
            await stub.Login(request, timeout=30)
        except grpc.aio.AioRpcError as exc:
            assert exc.details() and "\n" not in exc.details(), exc.details()
            return exc.code()
        raise AssertionError(f"a wrong password for {name} logged in")

    async with asyncio.timeout(90):
        logins = asyncio.ensure_future(asyncio.gather(*(wrong_login(i) for i in range(LOGINS))))
        during: list[float] = []
        while not logins.done() or len(during) < MIN_SENDS:
            during.append(await send(BASELINE_SENDS + len(during)))
        codes = await logins
        watch.stop.set()
        await watching
    after = await stub.GetClusterStatus(pb.GetClusterStatusRequest(), timeout=5)

    shed = codes.count(CODE.RESOURCE_EXHAUSTED)
    print(
        f"\n{LOGINS} concurrent wrong logins: {shed} shed with RESOURCE_EXHAUSTED, "
        f"{codes.count(CODE.UNAUTHENTICATED)} checked and refused"
        f"\nwriter before the flood: p50 {statistics.median(baseline) * 1000:.1f} ms, "
        f"p99 {percentile(baseline, 0.99) * 1000:.1f} ms ({len(baseline)} sends)"
        f"\nwriter during the flood: p50 {statistics.median(during) * 1000:.1f} ms, "
        f"p99 {percentile(during, 0.99) * 1000:.1f} ms ({len(during)} sends)"
        f"\n{watch.polls} status polls of every node: terms and leaders seen {watch.views}"
        f"\nfollowers' gaps between Appends over {LATE_S}s (of all): "
        + ", ".join(
            f"node {i}: %d of %d" % heartbeat_gaps(n, LATE_S)
            for i, n in cluster.nodes.items()
            if i != leader_id
        )
    )
    assert set(codes) <= {CODE.UNAUTHENTICATED, CODE.RESOURCE_EXHAUSTED}
    assert shed > 0, "nothing was shed: the hash pool is not bounded"
    assert watch.views == {(before.term, leader_id)}, cluster.log_tails()
    assert watch.degraded == [], watch.degraded
    assert (after.term, after.leader_id) == (before.term, leader_id)
    assert all(node.running for node in cluster.nodes.values())
    for node_id, node in cluster.nodes.items():
        if node_id != leader_id:
            late, total = await asyncio.to_thread(heartbeat_gaps, node, LATE_S)
            assert total > 0 and late == 0, f"node {node_id}: {late} of {total} gaps over {LATE_S}s"
    messages = await stub.Login(pb.LoginRequest(username="reader", password=PASSWORD))
    assert messages.unread_count == BASELINE_SENDS + len(during)
