"""The applier over a scripted committed stream: entries a snapshot already covered, the
streams open when the snapshot installs, and applies while a snapshot is captured."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatnode import applier as applier_module
from chatnode import ops
from chatnode.applier import Applier
from chatnode.cluster_clock import ClusterClock
from chatnode.live import Closed, LiveHub
from chatnode.session_cache import SessionCache
from chatnode.state import ChatState
from coord.boundary import Entry, EntryKind, Proposal
from coord.shell.disk import DiskGuard
from proto.errors import Unavailable

NOW = 1_700_000_000_000


class Scripted:
    """A coordinator whose committed stream is the batches the test queues."""

    def __init__(self) -> None:
        self.batches: asyncio.Queue[list[Entry] | None] = asyncio.Queue()
        self.next_index = 1

    def propose(self, payload: bytes) -> Proposal:
        proposal = Proposal(self.next_index, 1)
        self.next_index += 1
        return proposal

    async def committed(self) -> AsyncIterator[list[Entry]]:
        while (batch := await self.batches.get()) is not None:
            yield batch


def op_entry(index: int, op: ops.Op) -> Entry:
    return Entry(index, 1, EntryKind.OP, ops.encode(op))


@contextlib.asynccontextmanager
async def running(
    state: ChatState, coordinator: Scripted, hub: LiveHub | None = None
) -> AsyncIterator[Applier]:
    """An applier over the scripted stream, running until the block ends."""
    applier = Applier(
        coordinator,  # type: ignore[arg-type]
        state,
        hub or LiveHub(),
        DiskGuard(),
        SessionCache(state.session),
        ClusterClock(),
        lambda: 0,
    )
    task = asyncio.create_task(applier.run())
    try:
        yield applier
    finally:
        await coordinator.batches.put(None)
        await task
        applier.close()


async def test_an_undecodable_entry_applies_as_a_noop(tmp_path: Path) -> None:
    """A bug or corruption, never user input: every replica skips it alike, and the log
    goes on."""
    state = ChatState(tmp_path / "state.db")
    coordinator = Scripted()
    async with running(state, coordinator) as applier:
        garbage = applier.submit(ops.CreateAccount("ann", "h", "", NOW))
        after = applier.submit(ops.CreateAccount("bob", "h", "", NOW))
        undecodable = Entry(1, 1, EntryKind.OP, b'{"op":"create_account","username":7}')
        bob = op_entry(2, ops.CreateAccount("bob", "h", "", NOW))
        await coordinator.batches.put([undecodable, bob])
        async with asyncio.timeout(5):
            assert await garbage == ops.Result()
            assert (await after).ok
        assert state.account("ann") is None
        assert state.account("bob") is not None
        assert state.applied_index == 2


async def test_writes_apply_while_a_snapshot_is_captured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy of a large state takes seconds; the test holds one copy open for as long
    as it likes, and a write must apply meanwhile (a capture under the state lock stops
    every apply, so every call, until the copy ends)."""
    copying, release = threading.Event(), threading.Event()
    copy_state = applier_module._copy_state

    def held_copy(state_path: Path, path: Path) -> int:
        copying.set()
        release.wait(10)
        return copy_state(state_path, path)

    monkeypatch.setattr(applier_module, "_copy_state", held_copy)
    state = ChatState(tmp_path / "state.db")
    coordinator = Scripted()
    async with running(state, coordinator) as applier:
        try:
            capture = asyncio.create_task(applier.capture(tmp_path / "snapshot.db"))
            async with asyncio.timeout(5):
                await asyncio.to_thread(copying.wait, 5)
                waiting = applier.submit(ops.CreateAccount("ann", "h", "", NOW))
                await coordinator.batches.put([op_entry(1, ops.CreateAccount("ann", "h", "", NOW))])
                assert (await waiting).ok
            assert not capture.done(), "the copy was not held open"
            release.set()
            async with asyncio.timeout(5):
                await capture
        finally:
            release.set()


async def test_entries_a_snapshot_already_covered_are_skipped_and_their_callers_retry(
    tmp_path: Path,
) -> None:
    """A snapshot installs while a committed batch waits for the state: the batch's
    entries are at or below the new applied index. They are skipped without error (the
    message among them is not delivered again), and whoever waits on one is told to
    retry, which its request_id makes safe. A stream open on the node is ended with
    UNAVAILABLE, to subscribe again and read from the new state: none skips a message."""
    log = [
        op_entry(1, ops.CreateAccount("bob", "h", "", NOW)),
        op_entry(2, ops.Login("bob", 1, "t", "", "", NOW, "", NOW + 10**9)),
        op_entry(3, ops.SendMessage("t", "bob", "first", "m1", NOW, True)),
        op_entry(4, ops.SendMessage("t", "bob", "second", "m2", NOW, True)),
    ]
    with ChatState(tmp_path / "donor.db") as donor:
        donor.apply([(e.index, ops.decode(e.payload)) for e in log])
        donor.copy_to(tmp_path / "snapshot.db")
    state = ChatState(tmp_path / "state.db")
    coordinator = Scripted()
    hub = LiveHub()
    async with running(state, coordinator, hub) as applier:
        await coordinator.batches.put(log[:3])
        async with asyncio.timeout(5):
            await applier.wait_applied(3)
        subscriber = hub.subscribe(1, "bob", "t")
        coordinator.next_index = 4
        waiting = applier.submit(ops.SendMessage("t", "bob", "second", "m2", NOW, True))
        assert await applier.restore(tmp_path / "snapshot.db") == 4
        await coordinator.batches.put(log[2:])  # queued before the install: 3 and 4
        await coordinator.batches.put([op_entry(5, ops.Touch("t", NOW, 0))])
        async with asyncio.timeout(5):
            await applier.wait_applied(5)
            with pytest.raises(Unavailable):
                await waiting
        closed = await asyncio.wait_for(subscriber.get(), 5)
        assert isinstance(closed, Closed) and closed.unavailable
        assert subscriber.queued == 0, "a skipped entry was delivered"
        assert [m.body for m in state.messages_after("bob", 0, 10)] == ["first", "second"]


class CountingState(ChatState):
    """Records the size of each batch applied, and says when one was."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.batches: list[int] = []
        self.applied = threading.Event()

    def apply(self, entries):  # type: ignore[no-untyped-def]
        results = super().apply(entries)
        self.batches.append(len(entries))
        self.applied.set()
        return results


def account(index: int) -> Entry:
    return op_entry(index, ops.CreateAccount(f"user{index}", "h", "", NOW))


async def test_a_followers_entries_gather_into_one_batch_until_someone_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody here waits on them: they linger (for as long as the test likes) and apply as
    one transaction when wait_applied asks, as a new leader's read barrier does."""
    monkeypatch.setattr(applier_module, "LINGER_S", 3600.0)
    state = CountingState(tmp_path / "state.db")
    coordinator = Scripted()
    async with running(state, coordinator) as applier:
        for index in (1, 2, 3):
            await coordinator.batches.put([account(index)])
        async with asyncio.timeout(5):
            await applier.wait_applied(3)
        assert state.batches == [3]


async def test_a_proposal_applies_at_once_and_lingering_entries_apply_unasked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What this node proposed (a leader's caller waits) applies as soon as it commits,
    with whatever gathered before it; entries nobody waits on apply after LINGER_S."""
    monkeypatch.setattr(applier_module, "LINGER_S", 3600.0)
    state = CountingState(tmp_path / "state.db")
    coordinator = Scripted()
    async with running(state, coordinator) as applier:
        await coordinator.batches.put([account(1)])
        coordinator.next_index = 2
        waiting = applier.submit(ops.CreateAccount("user2", "h", "", NOW))
        await coordinator.batches.put([account(2)])
        async with asyncio.timeout(5):
            assert (await waiting).ok
        assert state.batches == [2]
        monkeypatch.setattr(applier_module, "LINGER_S", 0.05)
        state.applied.clear()
        await coordinator.batches.put([account(3)])
        assert await asyncio.to_thread(state.applied.wait, 5), "lingering entries never applied"
        assert state.batches == [2, 1] and applier.applied_index == 3
