"""Shared fixtures (an in-process chat node on a free loopback port, and a client stub), and
the tier markers: every test is marked with the folder it sits in.

| folder | marker | what runs |
|---|---|---|
| tests/core | core | the sans-IO protocol core, the simulator: no I/O, a fake clock |
| tests/shell | shell | the coordinator's storage and disk pieces, on files in tmp_path |
| tests/chat | chat | the chat state machine and the history checker, no network |
| tests/api | api | chat nodes in this process, called over gRPC on loopback |
| tests/cluster | cluster | real chatnode processes, network-namespace hosts, chatctl |
| tests/ui | ui | the terminal client, in-process and in a pseudo-terminal |

``pytest -m "not cluster"`` runs everything that starts no process of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from chatnode.local_cluster import free_port
from chatnode.server import ChatNode, NodeConfig
from proto import chat_pb2_grpc
from tests.support.nodes import wait_until_serving

TESTS = Path(__file__).resolve().parent
TIERS = ("core", "shell", "chat", "api", "cluster", "ui")


def pytest_configure(config: pytest.Config) -> None:
    for tier in TIERS:
        config.addinivalue_line("markers", f"{tier}: the tests in tests/{tier}/")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = Path(item.fspath).resolve().relative_to(TESTS).parts[0]
        if tier not in TIERS:
            where = ", ".join(f"tests/{t}/" for t in TIERS)
            raise pytest.UsageError(f"{item.nodeid}: every test lives in one of {where}")
        item.add_marker(tier)


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


@pytest.fixture
async def stub(node: ChatNode) -> AsyncIterator[chat_pb2_grpc.ChatServiceStub]:
    async with grpc.aio.insecure_channel(node.config.address) as channel:
        yield chat_pb2_grpc.ChatServiceStub(channel)
