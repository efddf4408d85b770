"""coord/shell/driver.py: where a Ready's log write runs.

A small write runs on the event loop: its two thread hops would cost more than its
fsync blocks the loop. A large one runs in the log's worker thread, so the loop reads
on meanwhile, and so does any write while the worker holds the store (a compaction,
an install): two transactions on one connection must never interleave.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from pathlib import Path

import pytest

from coord.shell.driver import INLINE_SAVE_ENTRIES, ReplicatedCoordinator
from proto.credentials import ClusterSecret
from tests.support.nodes import elected, in_process_cluster

LIMIT_S = 10
LOOP_TURNS = 20  # the driver takes three from a proposal to its Ready's write


class Writes:
    """Which thread wrote each Ready's entries, and how many there were."""

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
async def leader(tmp_path: Path):
    secret = ClusterSecret(secrets.token_bytes(32))
    async with in_process_cluster(tmp_path, lambda i: {"cluster_secret": secret}, 1) as nodes:
        yield (await elected(nodes)).coordinator


def propose(coordinator: ReplicatedCoordinator, count: int) -> None:
    """count entries proposed in one go, so one Ready carries them (undecodable as ops, the
    chat state applies them as no-ops)."""
    for i in range(count):
        coordinator.propose(b"entry %d" % i)


async def test_a_small_write_runs_on_the_loop_and_a_large_one_in_the_worker(
    leader: ReplicatedCoordinator, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = Writes(leader, monkeypatch)
    propose(leader, 1)
    assert await writes.next() == (threading.current_thread().name, 1)
    propose(leader, INLINE_SAVE_ENTRIES)
    assert await writes.next() == (threading.current_thread().name, INLINE_SAVE_ENTRIES)
    propose(leader, INLINE_SAVE_ENTRIES + 1)
    thread, entries = await writes.next()
    assert thread.startswith("log-") and entries == INLINE_SAVE_ENTRIES + 1


async def test_a_small_write_waits_for_the_worker_while_it_holds_the_store(
    leader: ReplicatedCoordinator, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = Writes(leader, monkeypatch)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        held.set()
        release.wait(LIMIT_S)

    holding = asyncio.create_task(leader._write_log(hold))
    await asyncio.to_thread(held.wait, LIMIT_S)
    propose(leader, 1)
    waiting = asyncio.create_task(writes.next())
    for _ in range(LOOP_TURNS):  # the driver's turn: a write on the loop would land now
        await asyncio.sleep(0)
    assert writes.seen == []
    release.set()
    await holding
    thread, entries = await waiting
    assert thread.startswith("log-") and entries == 1
