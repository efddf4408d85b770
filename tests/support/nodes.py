"""In-process chat nodes for tests: one on a free loopback port, or a small cluster of them
in this process on fast leases, and the waits and sign-up steps tests share."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from chatnode.local_cluster import free_port
from chatnode.server import ChatNode, NodeConfig
from proto import chat_pb2 as pb
from proto import chat_pb2_grpc

PASSWORD = "correct horse"
FAST_LEASE_MS = 300  # for in-process multi-node clusters: a fresh cluster elects after a lease


async def wait_until_serving(chat_node: ChatNode, limit_s: float = 10) -> None:
    """Wait for the node to elect itself and commit its first entry."""
    coordinator = chat_node.coordinator
    async with asyncio.timeout(limit_s):
        async for view in coordinator.leader_changes():
            if view is not None and view.leader_id == chat_node.config.node_id:
                break
        await coordinator.read_barrier()


async def signup(stub: chat_pb2_grpc.ChatServiceStub, username: str) -> tuple[tuple[str, str], ...]:
    """Create and log in a user; return the call metadata carrying its token."""
    await stub.CreateAccount(pb.CreateAccountRequest(username=username, password=PASSWORD))
    reply = await stub.Login(pb.LoginRequest(username=username, password=PASSWORD))
    return (("authorization", f"Bearer {reply.session_token}"),)


@contextlib.asynccontextmanager
async def in_process_cluster(
    tmp_path: Path,
    options: Callable[[int], dict[str, Any]],
    size: int = 3,
    *,
    two_listeners: bool = False,
) -> AsyncIterator[list[ChatNode]]:
    """`size` nodes in this process on fast leases, NodeConfig fields per node from
    options(node_id) (credentials among them: a cluster with peers needs some); stopped
    afterwards. With two_listeners, each node's address is PEER/CLIENT on two ports."""

    def address() -> str:
        one = f"127.0.0.1:{free_port()}"
        return f"{one}/127.0.0.1:{free_port()}" if two_listeners else one

    cluster = {i: address() for i in range(1, size + 1)}
    nodes = [
        ChatNode(
            NodeConfig(
                node_id=i,
                cluster=cluster,
                data_dir=tmp_path / f"n{i}",
                lease_ms=FAST_LEASE_MS,
                heartbeat_ms=FAST_LEASE_MS // 10,
                **options(i),
            )
        )
        for i in cluster
    ]
    for node in nodes:
        await node.start()
    try:
        yield nodes
    finally:
        for node in nodes:
            await node.stop()


async def elected(nodes: list[ChatNode], limit_s: float = 10) -> ChatNode:
    """The node that wins the first election, once it has committed its first entry."""
    async with asyncio.timeout(limit_s):
        async for view in nodes[0].coordinator.leader_changes():
            if view is not None:
                leader = next(n for n in nodes if n.config.node_id == view.leader_id)
                await leader.coordinator.read_barrier()
                return leader
    raise AssertionError("no leader")
