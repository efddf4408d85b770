"""Shared fixtures: an in-process chat node on a free loopback port, and a client stub."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from chatnode.server import ChatNode, NodeConfig
from proto import chat_pb2 as pb
from proto import chat_pb2_grpc
from tests.cluster import free_port

PASSWORD = "correct horse"
FAST_LEASE_MS = 300  # for in-process multi-node clusters: a fresh cluster elects after a lease


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[ChatNode]:
    config = NodeConfig(
        node_id=1,
        cluster={1: f"127.0.0.1:{free_port()}"},
        data_dir=tmp_path / "n1",
    )
    chat_node = ChatNode(config)
    await chat_node.start()
    await wait_until_serving(chat_node)
    try:
        yield chat_node
    finally:
        await chat_node.stop()


async def wait_until_serving(chat_node: ChatNode, limit_s: float = 10) -> None:
    """Wait for the node to elect itself and commit its first entry."""
    coordinator = chat_node.coordinator
    async with asyncio.timeout(limit_s):
        async for view in coordinator.leader_changes():
            if view is not None and view.leader_id == chat_node.config.node_id:
                break
        await coordinator.read_barrier()


@pytest.fixture
async def stub(node: ChatNode) -> AsyncIterator[chat_pb2_grpc.ChatServiceStub]:
    async with grpc.aio.insecure_channel(node.config.address) as channel:
        yield chat_pb2_grpc.ChatServiceStub(channel)


async def signup(stub: chat_pb2_grpc.ChatServiceStub, username: str) -> tuple[tuple[str, str], ...]:
    """Create and log in a user; return the call metadata carrying its token."""
    await stub.CreateAccount(pb.CreateAccountRequest(username=username, password=PASSWORD))
    reply = await stub.Login(pb.LoginRequest(username=username, password=PASSWORD))
    return (("authorization", f"Bearer {reply.session_token}"),)
