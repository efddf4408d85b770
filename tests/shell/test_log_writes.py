"""coord/shell/driver.py: where a Ready's log write runs.

A follower's small write runs on the event loop: its two thread hops would cost more
than its fsync blocks the loop. A large one runs in the log's worker thread, so the
loop reads on meanwhile, and so does any write while the worker holds the store (a
compaction, an install): two transactions on one connection must never interleave. A
leader writes in the worker always: what is proposed during its fsync is its next batch.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatnode.server import ChatNode
from coord.shell.driver import INLINE_SAVE_ENTRIES, ReplicatedCoordinator
from proto.credentials import ClusterSecret
from tests.support.faults import deadline_loop
from tests.support.nodes import elected, in_process_cluster

LIMIT_S = 10
LOOP_TURNS = 20  # a follower's driver takes a few from an Append to its Ready's write


class Writes:
    """Which thread wrote each of a node's Readies of entries, and how many there were."""

    def __init__(self, coordinator: ReplicatedCoordinator, monkeypatch: pytest.MonkeyPatch):
        self.seen: list[tuple[str, int]] = []
        self._loop = asyncio.get_running_loop()
        self._written = asyncio.Event()
        store = coordinator._store
        save = store.save

        def recorded(hard_state, snapshot, entries):  # LogStore.save's signature
            result = save(hard_state, snapshot, entries)
            if entries:
                self.seen.append((threading.current_thread().name, len(entries)))
                self._loop.call_soon_threadsafe(self._written.set)
            return result

        monkeypatch.setattr(store, "save", recorded)

    async def next(self) -> tuple[str, int]:
        """The next write of entries, once it is durable."""
        count = len(self.seen)
        async with asyncio.timeout(LIMIT_S):
            while len(self.seen) == count:
                self._written.clear()
                await self._written.wait()
        return self.seen[count]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[ChatNode, ChatNode]]:
    """The leader and a follower of three in-process nodes."""
    secret = ClusterSecret(secrets.token_bytes(32))
    async with in_process_cluster(tmp_path, lambda i: {"cluster_secret": secret}) as nodes:
        leader = await elected(nodes)
        yield leader, next(n for n in nodes if n is not leader)


def propose(leader: ChatNode, count: int) -> None:
    """count entries proposed in one go, so one Ready and one Append carry them
    (undecodable as ops, the chat state applies them as no-ops)."""
    for i in range(count):
        leader.coordinator.propose(b"entry %d" % i)


def in_worker(write: tuple[str, int]) -> bool:
    return write[0].startswith("log-")


async def test_a_followers_small_write_runs_on_the_loop_and_a_large_one_in_the_worker(
    cluster: tuple[ChatNode, ChatNode], monkeypatch: pytest.MonkeyPatch
) -> None:
    leader, follower = cluster
    writes = Writes(follower.coordinator, monkeypatch)
    loop_thread = threading.current_thread().name
    propose(leader, 1)
    assert await writes.next() == (loop_thread, 1)
    propose(leader, INLINE_SAVE_ENTRIES)
    assert await writes.next() == (loop_thread, INLINE_SAVE_ENTRIES)
    propose(leader, INLINE_SAVE_ENTRIES + 1)
    large = await writes.next()
    assert in_worker(large) and large[1] == INLINE_SAVE_ENTRIES + 1


async def test_a_leader_writes_in_the_worker_however_small(
    cluster: tuple[ChatNode, ChatNode], monkeypatch: pytest.MonkeyPatch
) -> None:
    leader, _ = cluster
    writes = Writes(leader.coordinator, monkeypatch)
    propose(leader, 1)
    small = await writes.next()
    assert in_worker(small) and small[1] == 1


async def test_a_small_write_waits_for_the_worker_while_it_holds_the_store(
    cluster: tuple[ChatNode, ChatNode], monkeypatch: pytest.MonkeyPatch
) -> None:
    leader, follower = cluster
    writes = Writes(follower.coordinator, monkeypatch)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        held.set()
        release.wait(LIMIT_S)

    holding = asyncio.create_task(follower.coordinator._write_log(hold))
    await asyncio.to_thread(held.wait, LIMIT_S)
    propose(leader, 1)
    waiting = asyncio.create_task(writes.next())
    last = leader.coordinator.node.log.last_index()
    async for _ in deadline_loop(LIMIT_S, "the Append reaches the follower's core"):
        if follower.coordinator.node.log.last_index() >= last:
            break
    for _ in range(LOOP_TURNS):  # the driver's turn: a write on the loop would land now
        await asyncio.sleep(0)
    assert writes.seen == []
    release.set()
    await holding
    write = await waiting
    assert in_worker(write) and write[1] == 1
