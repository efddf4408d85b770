"""Applies committed log entries to the chat state, in order, and hands back results.

The chat state changes only here, and only from committed entries: a node that
proposes learns its own result the same way every other replica does, by
applying the entry. A batch of entries is one SQLite transaction that never
waits on the disk (synchronous=NORMAL; checkpoints run in the worker thread):
small batches apply on the event loop, large ones in the worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from chatnode import ops
from chatnode.cluster_clock import ClusterClock
from chatnode.live import LiveHub
from chatnode.metrics import APPLY, APPLY_ON_LOOP
from chatnode.session_cache import SessionCache
from chatnode.state import ChatReader, ChatState
from coord.boundary import Coordinator, DiskWrites, Entry, EntryKind
from proto.errors import Unavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

# Small, cheap batches apply on the event loop: with synchronous=NORMAL and
# checkpoints off the hot path, applying one such op is CPU work of tens of
# microseconds, less than a hop to a worker thread. Anything else goes to the
# worker, so the loop keeps serving heartbeats and lease renewals meanwhile: large
# batches (catch-up after a restart), large payloads, and the ops whose work grows
# with the user's data (a first ReadMessages reads up to its limit of rows, a
# DeleteAccount deletes every message to the account).
INLINE_APPLY_ENTRIES = 64
INLINE_APPLY_BYTES = 64 << 10

# Entries nobody on this node waits for (a follower's) gather this long, or this many,
# before they apply (Applier.run).
LINGER_S = 0.1
BATCH_ENTRIES = 512
_UNBOUNDED_OPS = (ops.ReadMessages, ops.DeleteAccount)


@dataclass(slots=True)
class _Waiter:
    term: int
    future: asyncio.Future[ops.Result]


class Applier:
    """Owns the writer side of the chat state."""

    def __init__(
        self,
        coordinator: Coordinator,
        state: ChatState,
        hub: LiveHub,
        disk: DiskWrites,
        sessions: SessionCache,
        clock: ClusterClock,
        monotonic_clock_ms: Callable[[], int],
    ) -> None:
        self._coord = coordinator
        self._state = state
        self._clock = clock
        self._mono_ms = monotonic_clock_ms
        self._hub = hub
        self._sessions = sessions
        self._disk = disk
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="apply")
        self._waiting: dict[int, _Waiter] = {}
        self._applied = asyncio.Condition()
        self._state_lock = asyncio.Lock()  # applies, checkpoints and restores take turns
        self.applied_index = state.applied_index
        self._inbox: asyncio.Queue[list[Entry] | BaseException | None] | None = None
        self._wanted = 0  # the highest index someone waits to see applied
        self._received = 0  # the last committed index handed to run()
        self._observe_clock()

    async def run(self) -> None:
        """Apply committed entries until the coordinator stops streaming them.

        Entries this node waits on (it proposed them, as a leader does, or someone
        awaits :meth:`wait_applied`) apply at once. Others (a follower's) gather for
        up to LINGER_S or BATCH_ENTRIES: one transaction then writes each page it
        touches once, where thirty-odd small ones wrote them over and over (a
        follower's apply costs about a quarter less CPU per entry in batches of
        512 than of 32). A follower's state may lag its log by that much; before
        it leads, its read barrier waits for the state, and so does a capture.
        """
        inbox: asyncio.Queue[list[Entry] | BaseException | None] = asyncio.Queue()
        self._inbox = inbox
        feeder = asyncio.create_task(self._feed(inbox), name="committed")
        loop = asyncio.get_running_loop()
        pending: list[Entry] = []
        since = 0.0  # when the first of them arrived
        ended = False
        try:
            while not ended:
                linger = LINGER_S - (loop.time() - since) if pending else None
                arrived, ended = await _take(inbox, linger)
                if arrived and not pending:
                    since = loop.time()
                pending.extend(arrived)
                if pending and (ended or self._due(pending, loop.time() - since)):
                    batch, pending = pending, []
                    await self._apply(batch)
        finally:
            feeder.cancel()
            self._inbox = None
        self._fail_waiters("node is shutting down")

    async def _feed(self, inbox: asyncio.Queue[list[Entry] | BaseException | None]) -> None:
        """Hand the committed stream to run(), which also wakes for wait_applied."""
        try:
            async for batch in self._coord.committed():
                self._received = batch[-1].index if batch else self._received
                inbox.put_nowait(batch)
        except Exception as exc:  # run() raises it: the node's fault, as before
            inbox.put_nowait(exc)
        else:
            inbox.put_nowait(None)

    def _due(self, pending: Sequence[Entry], waited_s: float) -> bool:
        """Whether the gathered entries apply now: someone here awaits one (a caller of
        what this node proposed, or of wait_applied), or there are enough of them, or
        they lingered long enough."""
        return (
            self._wanted >= pending[0].index
            or len(pending) >= BATCH_ENTRIES
            or waited_s >= LINGER_S
            or (bool(self._waiting) and any(entry.index in self._waiting for entry in pending))
        )

    def close(self) -> None:
        self._io.shutdown(wait=True)
        self._state.close()

    @property
    def in_flight(self) -> int:
        """Ops this node proposed whose callers still wait for them to commit and apply."""
        return len(self._waiting)

    def submit(self, op: ops.Op) -> asyncio.Future[ops.Result]:
        """Propose op; the future resolves with its Result once it is committed and applied."""
        proposal = self._coord.propose(ops.encode(op))
        future = asyncio.get_running_loop().create_future()
        self._waiting[proposal.index] = _Waiter(proposal.term, future)
        return future

    async def wait_applied(self, index: int) -> None:
        if index > self.applied_index and index > self._wanted:
            self._wanted = index
            if self._inbox is not None:
                self._inbox.put_nowait([])  # run() looks again: now it is due
        async with self._applied:
            await self._applied.wait_for(lambda: self.applied_index >= index)

    def abandon_pending(self, reason: str) -> None:
        """Leadership was lost: what this node proposed may never commit under its term."""
        self._fail_waiters(reason)

    # -- coord.boundary.StateHooks -----------------------------------------------------

    async def checkpoint(self) -> int | None:
        async with self._state_lock:
            return await self._in_worker(self._state.checkpoint)

    async def capture(self, path: Path) -> int:
        """Copy the state over a connection of its own, in a thread of its own, without
        the state lock: a copy of a large state takes seconds, and applies (so every
        call) go on meanwhile. The copy is the state as of one commit, once everything
        received so far has applied."""
        await self.wait_applied(self._received)
        return await asyncio.to_thread(_copy_state, self._state.path, path)

    async def restore(self, path: Path) -> int:
        async with self._state_lock:
            index = await self._in_worker(self._state.restore_from, path)
            self._observe_clock()
            self._sessions.clear()
            # What a stream sent came from the state replaced: its client subscribes again
            # after the last id it got and reads the rest from the new state.
            self._hub.close_all("this node's state was replaced by a snapshot")
            await self._mark_applied(index)
            return index

    async def _in_worker(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    async def _mark_applied(self, index: int) -> None:
        async with self._applied:
            self.applied_index = index
            self._applied.notify_all()

    async def _apply(self, batch: Sequence[Entry]) -> None:
        async with self._state_lock:
            # Entries a snapshot install already covered (it may land while this batch
            # waited for the lock) are skipped: their effects are in the state, but their
            # replies are not to be had, so whoever waits on one retries.
            fresh = [entry for entry in batch if entry.index > self._state.applied_index]
            for entry in batch[: len(batch) - len(fresh)]:
                self._resolve(entry, None)
            if not fresh:
                return
            decoded = [(entry.index, _decode(entry)) for entry in fresh]

            async def apply_batch() -> list[ops.Result]:
                with APPLY.time():
                    if _cheap(decoded):
                        with APPLY_ON_LOOP.time():
                            return self._state.apply(decoded)
                    return await self._in_worker(self._state.apply, decoded)

            # A full disk rolls the batch back; it is applied again once space returns.
            results = await self._disk.write("state", apply_batch)
            newest = _newest_stamp(fresh, decoded)
            if newest and newest not in self._waiting:
                self._observe_clock()
        for entry, (_, op), result in zip(fresh, decoded, results, strict=True):
            self._resolve(entry, result)
            if op is not None and result.ok:
                self._sessions.applied(op)
                self._hub.applied(entry.index, op, result)
        await self._mark_applied(max(self.applied_index, fresh[-1].index))

    def _observe_clock(self) -> None:
        """The newest cluster time applied was stamped no later than now: a bound on what
        this node may stamp if it leads (chatnode.cluster_clock). A state that holds no
        time yet bounds nothing. Ops this node proposed are not observed again when
        they apply: it observed each when it stamped it, and a second sighting, later,
        would slow its clock by the time the op took to commit."""
        if self._state.clock_ms:
            self._clock.observe(self._state.clock_ms, self._mono_ms())

    def _resolve(self, entry: Entry, result: ops.Result | None) -> None:
        waiter = self._waiting.pop(entry.index, None)
        if waiter is None or waiter.future.done():
            return
        if waiter.term == entry.term and result is not None:
            waiter.future.set_result(result)
        else:
            waiter.future.set_exception(Unavailable("leadership changed; retry"))

    def _fail_waiters(self, reason: str) -> None:
        waiting, self._waiting = self._waiting, {}
        for waiter in waiting.values():
            if not waiter.future.done():
                waiter.future.set_exception(Unavailable(reason))


async def _take(
    inbox: asyncio.Queue[list[Entry] | BaseException | None], within_s: float | None
) -> tuple[list[Entry], bool]:
    """The entries that arrive within within_s (none: it ran out), with every batch queued
    behind the first, and whether the stream ended; raises what the feeder raised."""
    arrived: list[Entry] = []
    try:
        async with asyncio.timeout(within_s):
            item = await inbox.get()
    except TimeoutError:
        return arrived, False
    while True:
        if isinstance(item, BaseException):
            raise item
        if item is None:
            return arrived, True
        arrived.extend(item)
        if inbox.empty():
            return arrived, False
        item = inbox.get_nowait()


def _copy_state(state_path: Path, path: Path) -> int:
    with ChatReader(state_path) as reader:
        return reader.copy_to(path)


def _newest_stamp(batch: Sequence[Entry], decoded: Sequence[tuple[int, ops.Op | None]]) -> int:
    """The index of the batch's last op that carries a time (0: none does)."""
    for entry, (_, op) in zip(reversed(batch), reversed(decoded), strict=True):
        if op is not None and op.now_ms:
            return entry.index
    return 0


def _cheap(decoded: Sequence[tuple[int, ops.Op | None]]) -> bool:
    """Whether a batch may apply on the event loop (see INLINE_APPLY_ENTRIES)."""
    if len(decoded) > INLINE_APPLY_ENTRIES:
        return False
    size = 0
    for _, op in decoded:
        if isinstance(op, _UNBOUNDED_OPS):
            return False
        size += len(getattr(op, "body", ""))
    return size <= INLINE_APPLY_BYTES


def _decode(entry: Entry) -> ops.Op | None:
    if entry.kind is not EntryKind.OP:
        return None
    try:
        return ops.decode(entry.payload)
    except ops.MalformedOp:
        log.error(
            "entry %d holds an undecodable op; applying it as a no-op",
            entry.index,
            extra={"event": "undecodable_entry"},
        )
        return None
