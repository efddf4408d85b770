"""One logged-in user against the whole cluster, with real processes: replaying a large
read from many tasks, and holding streams full of large replies it never reads.

Each must cost that user a bounded share, and nobody else anything they would notice:
no leader change (the heartbeats are never queued behind the flood), every other
user's call answered, and the leader's memory within the streams' byte budget.
``pytest -s`` prints the figures (the longest batch applied on the event loop, the
leader's RSS).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from chatnode.local_cluster import Cluster, local_cluster
from chatnode.session_stream import REPLY_BYTES
from proto import chat_pb2 as pb
from proto import chat_pb2_grpc
from tests.support.nodes import signup

FLOOD_S = 8.0
REPLAYERS = 32
Stub = chat_pb2_grpc.ChatServiceStub


@pytest.fixture
async def cluster(tmp_path) -> AsyncIterator[Cluster]:  # type: ignore[no-untyped-def]
    with local_cluster(tmp_path, size=3, metrics=True) as running:
        yield running


def terms(cluster: Cluster) -> set[tuple[int, int]]:
    """(leader, term) as every node sees it."""
    views = [cluster.status(node_id) for node_id in cluster.nodes]
    return {(v.leader_id, v.term) for v in views if v is not None}


def loop_apply_buckets(cluster: Cluster, node_id: int) -> dict[str, float]:
    samples = cluster.nodes[node_id].metric_samples("chat_apply_on_loop_seconds_bucket")
    return {dict(labels)["le"]: count for labels, count in samples.items()}


async def test_a_replayed_large_read_neither_moves_the_leader_nor_stalls_others(
    cluster: Cluster,
) -> None:
    leader = cluster.wait_for_leader()
    async with grpc.aio.insecure_channel(cluster.nodes[leader].address) as channel:
        stub = Stub(channel)
        mallory, alice = await signup(stub, "mallory"), await signup(stub, "alice")
        note = pb.SendMessageRequest(recipient="mallory", body="note " * 20)
        for _ in range(10):
            await asyncio.gather(*(stub.SendMessage(note, metadata=mallory) for _ in range(100)))
        replay = pb.ReadMessagesRequest(limit=1000, request_id="R")
        first = await stub.ReadMessages(replay, metadata=mallory)
        assert len(first.messages) == 1000
        before = terms(cluster)
        stop = time.monotonic() + FLOOD_S
        codes: dict[grpc.StatusCode, int] = {}

        async def replayer() -> None:
            while time.monotonic() < stop:
                try:
                    await stub.ReadMessages(replay, metadata=mallory, timeout=10)
                    code = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as exc:
                    code = exc.code()
                codes[code] = codes.get(code, 0) + 1

        async def bystander() -> list[float]:
            waits = []
            hello = pb.SendMessageRequest(recipient="alice", body="still here")
            while time.monotonic() < stop:
                started = time.monotonic()
                await stub.SendMessage(hello, metadata=alice, timeout=10)
                waits.append(time.monotonic() - started)
                await asyncio.sleep(0.05)
            return waits

        *_, waits = await asyncio.gather(*(replayer() for _ in range(REPLAYERS)), bystander())
    assert terms(cluster) == before, "the flood moved the leader"
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    on_loop = loop_apply_buckets(cluster, leader)
    print(
        f"\nreplays answered {codes.get(grpc.StatusCode.OK, 0)}, refused "
        f"{codes.get(grpc.StatusCode.RESOURCE_EXHAUSTED, 0)}; bystander sends {len(waits)}, "
        f"slowest {max(waits) * 1000:.0f} ms; batches applied on the leader's loop by bound "
        f"(s, cumulative): {on_loop}"
    )
    assert on_loop["0.05"] == on_loop["+Inf"], "a batch held the event loop over 50 ms"


async def test_streams_full_of_unread_large_replies_hold_a_bounded_amount_of_memory(
    cluster: Cluster,
) -> None:
    """Eight Session streams (the most one user may open), each sending 64 replays of a
    3 MiB read and reading nothing: without a bound that is 1.5 GiB of replies."""
    leader = cluster.wait_for_leader()
    node = cluster.nodes[leader]
    async with grpc.aio.insecure_channel(node.address) as channel:
        stub = Stub(channel)
        mallory, sender = await signup(stub, "mallory"), await signup(stub, "sender")
        big = pb.SendMessageRequest(recipient="mallory", body="x" * 65_536)
        await asyncio.gather(*(stub.SendMessage(big, metadata=sender) for _ in range(47)))
        replay = pb.ReadMessagesRequest(limit=1000, request_id="R")
        first = await stub.ReadMessages(replay, metadata=mallory)
        assert len(first.messages) == 47  # about 3 MiB
        rss_before = node.rss_bytes()
        streams = [stub.Session(metadata=mallory) for _ in range(8)]
        again = pb.ClientFrame(request_id="R", read_messages=pb.ReadMessagesRequest(limit=1000))
        for stream in streams:
            for _ in range(64):  # each a replay of R: the same 3 MiB batch every time
                await stream.write(again)
        await asyncio.sleep(3.0)  # what the leader will take in, it takes by now
        rss_after = node.rss_bytes()
        # Another user is still served meanwhile.
        await stub.SendMessage(
            pb.SendMessageRequest(recipient="sender", body="hi"), metadata=sender
        )
        for stream in streams:
            stream.cancel()
    grown = rss_after - rss_before
    bound = 8 * REPLY_BYTES
    print(f"\nleader RSS {rss_before >> 20} MiB -> {rss_after >> 20} MiB (+{grown >> 20} MiB); "
          f"the streams' budget is {bound >> 20} MiB")  # fmt: skip
    assert grown <= bound + (96 << 20), f"the leader grew by {grown >> 20} MiB"
