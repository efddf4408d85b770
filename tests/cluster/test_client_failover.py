"""The client and the app ride through the loss of the leader (real processes, kill -9).

Each scenario runs twice: on one node that is killed and restarted, and on
three nodes whose leader is killed for good so another takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatnode.local_cluster import Cluster, local_cluster
from client.library import ChatClient, Connection
from tests.support.clients import Inbox, StateLog
from tests.support.nodes import PASSWORD
from tests.support.screens import open_screen

SIZES = [
    pytest.param(1, id="restart-the-only-node"),
    pytest.param(3, id="kill-the-leader-of-3"),
]
WRITERS = 4
SENDS_PER_WRITER = 40
KILL_AFTER = 20  # acknowledged sends before the leader dies
WAIT_S = 30.0


def kill_leader(cluster: Cluster) -> int:
    """kill -9 whichever node leads; a lone node is started again on its data dir."""
    leader = cluster.wait_for_leader()
    cluster.nodes[leader].kill()
    if len(cluster.nodes) == 1:
        cluster.nodes[leader].start()
    return leader


@contextlib.asynccontextmanager
async def signed_in(
    members: list[str], name: str, unary: bool = False
) -> AsyncIterator[ChatClient]:
    async with ChatClient(members, unary=unary) as client:
        await client.create_account(name, PASSWORD)
        await client.login(name, PASSWORD)
        yield client


@pytest.mark.parametrize("unary", [False, True], ids=["stream", "unary"])
@pytest.mark.parametrize("size", SIZES)
async def test_sends_in_flight_when_the_leader_dies_complete_exactly_once(
    tmp_path: Path, size: int, unary: bool
) -> None:
    """Four writers share one client (over one Session stream, or unary calls): the calls
    in flight when the leader dies are re-sent with their ids and stored once each."""
    with local_cluster(tmp_path, size=size) as cluster:
        async with (
            signed_in(cluster.addresses, "writer", unary) as writer,
            signed_in(cluster.addresses, "sink") as sink,
        ):
            log = StateLog(writer)
            acked: dict[str, int] = {}
            enough = asyncio.Event()

            async def send(worker: int) -> None:
                for seq in range(SENDS_PER_WRITER):
                    body = f"w{worker}-{seq}"
                    acked[body] = (await writer.send_message("sink", body)).message_id
                    if len(acked) >= KILL_AFTER:
                        enough.set()

            async with asyncio.timeout(WAIT_S):
                senders = asyncio.gather(*(send(w) for w in range(WRITERS)))
                await enough.wait()
                kill_leader(cluster)  # while sends are in flight
                await senders  # every one completes: none may raise
            inbox = Inbox(sink)
            try:
                stored = await inbox.wait_for(len(acked))
            finally:
                await inbox.close()
    assert Connection.FAILING_OVER in [s.connection for s in log.states], "no failover was seen"
    assert len(acked) == WRITERS * SENDS_PER_WRITER
    assert {m.body: m.id for m in stored} == acked, "each send stored once, under its own id"
    assert len(stored) == len(acked)


@pytest.mark.parametrize("size", SIZES)
async def test_a_subscription_resumes_across_the_loss_of_the_leader(
    tmp_path: Path, size: int
) -> None:
    with local_cluster(tmp_path, size=size) as cluster:
        async with (
            signed_in(cluster.addresses, "writer") as writer,
            signed_in(cluster.addresses, "reader") as reader,
        ):
            log = StateLog(reader)
            inbox = Inbox(reader)
            try:
                sent = [(await writer.send_message("reader", "before")).message_id]
                await inbox.wait_for(1)
                kill_leader(cluster)
                await log.wait_for(lambda s: s.connection == Connection.FAILING_OVER)
                for body in ("during", "after"):
                    sent.append((await writer.send_message("reader", body)).message_id)
                received = await inbox.wait_for(3)
            finally:
                await inbox.close()
    assert [m.id for m in received] == sent, "no gap and no duplicate"
    assert [m.body for m in received] == ["before", "during", "after"]


@pytest.mark.parametrize("size", SIZES)
async def test_the_status_bar_shows_reconnecting_then_connected(tmp_path: Path, size: int) -> None:
    with local_cluster(tmp_path, size=size) as cluster:
        async with signed_in(cluster.addresses, "alice"):
            pass
        async with open_screen(cluster.addresses, tmp_path / "history") as screen:
            await screen.login("alice")
            before = screen.view.status_text()
            assert before.endswith("│ connected")
            shown: list[str] = []
            screen.controller.add_listener(lambda: shown.append(screen.view.status_text()))
            kill_leader(cluster)
            await screen.until(lambda: bool(shown) and shown[-1].endswith("│ connected"))
    failing = next(i for i, text in enumerate(shown) if "│ reconnecting… " in text)
    assert all(not text.endswith("│ connected") for text in shown[:failing])
    assert shown[-1] != before, "a new term (and, with 3 nodes, a new leader) is shown"


async def test_a_paused_leader_is_left_behind_by_sends_and_subscriptions(tmp_path: Path) -> None:
    """SIGSTOP: no connection is refused, so only the lease and the client's attempt
    deadline and its stream watchdog can tell; both calls and the stream must move on."""
    with local_cluster(tmp_path, size=3, extra_args=("--lease-ms", "600")) as cluster:
        async with (
            signed_in(cluster.addresses, "writer") as writer,
            signed_in(cluster.addresses, "reader") as reader,
        ):
            inbox = Inbox(reader)
            paused = cluster.wait_for_leader()
            try:
                sent = [(await writer.send_message("reader", "before")).message_id]
                await inbox.wait_for(1)
                cluster.nodes[paused].signal(signal.SIGSTOP)
                sent.append((await writer.send_message("reader", "while paused")).message_id)
                received = await inbox.wait_for(2)
            finally:
                cluster.nodes[paused].signal(signal.SIGCONT)
                await inbox.close()
            assert (await writer.cluster_status()).leader_id != paused
    assert [m.id for m in received] == sent, "no gap and no duplicate"
