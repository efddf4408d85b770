"""The cluster clock on real nodes in this process: a majority's agreeing wall clocks are
taken for real time (after a stop of every node), one node's clock alone is not."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import replace
from pathlib import Path

import grpc

from chatnode.server import ChatNode
from chatnode.service import monotonic_ms, system_clock_ms
from proto import chat_pb2 as pb
from proto import chat_pb2_grpc
from proto.credentials import ClusterSecret
from tests.support.nodes import elected, in_process_cluster, signup

H = 3_600_000
NEAR_MS = 5_000  # "real time": as close as a test on a loaded machine can tell


def an_hour_ago() -> int:
    return system_clock_ms() - H


async def sent_at(stub: chat_pb2_grpc.ChatServiceStub, metadata, body: str) -> int:
    """Send body to ourselves and read back the time the cluster stamped on it."""
    await stub.SendMessage(pb.SendMessageRequest(recipient="ann", body=body), metadata=metadata)
    reply = await stub.ReadMessages(pb.ReadMessagesRequest(limit=100), metadata=metadata)
    (message,) = [m for m in reply.messages if m.body == body]
    return message.sent_at_unix_ms


async def test_after_every_node_stopped_times_return_to_real_time_once_a_majority_agrees(
    tmp_path: Path,
) -> None:
    """Every node's clock an hour behind, then all of them stopped and started right: no
    monotonic clock spans the stop, so only the members' agreeing wall clocks can move the
    cluster clock forward by the hour. Without that it lags an hour for ever."""
    secret = ClusterSecret(secrets.token_bytes(32))
    options = {"cluster_secret": secret, "wall_clock_ms": an_hour_ago}
    async with in_process_cluster(tmp_path, lambda i: options) as nodes:
        leader = await elected(nodes)
        async with grpc.aio.insecure_channel(leader.config.address) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            metadata = await signup(stub, "ann")
            assert abs(await sent_at(stub, metadata, "before") - an_hour_ago()) < NEAR_MS
        configs = [replace(node.config, wall_clock_ms=system_clock_ms) for node in nodes]
    restarted = [ChatNode(config) for config in configs]
    for node in restarted:
        await node.start()
    try:
        leader = await elected(restarted)
        async with grpc.aio.insecure_channel(leader.config.address) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            async with asyncio.timeout(10):  # each send waits for its peers' AppendReplies
                sent = 0
                while abs(await sent_at(stub, metadata, f"after {sent}") - system_clock_ms()) > (
                    NEAR_MS
                ):
                    sent += 1
        assert leader.coordinator.wall_clock_agreed(system_clock_ms(), monotonic_ms())
        follower = next(node for node in restarted if node is not leader)
        assert not follower.coordinator.wall_clock_agreed(system_clock_ms(), monotonic_ms())
        # The leader's clock stepped two hours ahead disagrees with every peer at once.
        assert not leader.coordinator.wall_clock_agreed(system_clock_ms() + 2 * H, monotonic_ms())
    finally:
        for node in restarted:
            await node.stop()
