"""A one-member coordinator: the log path without replication.

An entry commits once it is fsynced. Proposals that arrive while a write is in
flight wait for the next one and share its transaction and its fsync (group
commit), so throughput grows with concurrency while latency stays one fsync.
This is the shape the replicated coordinator keeps; only the commit rule
differs.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from coord.boundary import (
    Entry,
    EntryKind,
    LeaderView,
    MemberStatus,
    NotLeader,
    Proposal,
    Status,
)
from coord.log_store import HardState, LogStore

MAX_BATCH_BYTES = 1 << 20
RECENT_ENTRIES = 4096  # committed entries kept in memory so appliers need not re-read them


class SingleReplica:
    """Coordinator for a cluster of exactly one member."""

    def __init__(self, node_id: int, address: str, data_dir: Path) -> None:
        self._id = node_id
        self._address = address
        self._path = data_dir / "log.db"
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"log-{node_id}")
        self._store: LogStore | None = None
        self._term = 0
        self._last_index = 0
        self._commit_index = 0
        self._pending: list[Entry] = []
        self._recent: deque[Entry] = deque(maxlen=RECENT_ENTRIES)
        self._has_pending = asyncio.Event()
        self._commit_advanced = asyncio.Condition()
        self._writer: asyncio.Task[None] | None = None
        self._serving = False
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        self._store = await self._run(LogStore, self._path)
        hard = await self._run(self._store.hard_state)
        self._last_index = await self._run(self._store.last_index)
        self._commit_index = self._last_index
        # A new term per start marks which entries this incarnation wrote.
        self._term = hard.term + 1
        await self._run(self._store.save, (), HardState(self._term, self._id))
        self._writer = asyncio.create_task(self._write_loop(), name="log-writer")
        self._serving = True
        config = {"members": {str(self._id): self._address}, "isr": [self._id], "min_insync": 1}
        self._append(EntryKind.NOOP, b"")
        self._append(EntryKind.CONFIG, json.dumps(config).encode())

    async def stop(self) -> None:
        self._serving = False
        if self._writer is not None:
            self._has_pending.set()
            await self._writer
        self._stopped.set()
        if self._store is not None:
            await self._run(self._store.close)
        self._io.shutdown(wait=True)

    def propose(self, payload: bytes) -> Proposal:
        if not self._serving:
            raise NotLeader("", "node is shutting down")
        entry = self._append(EntryKind.OP, payload)
        return Proposal(entry.index, entry.term)

    async def read_barrier(self) -> int:
        if not self._serving:
            raise NotLeader("", "node is shutting down")
        return self._commit_index

    async def committed(self, after_index: int) -> AsyncIterator[list[Entry]]:
        next_index = after_index + 1
        while True:
            if not await self._wait_commit(next_index):
                return
            batch = self._recent_from(next_index) or await self._run(
                self._store_entries, next_index, self._commit_index + 1, MAX_BATCH_BYTES
            )
            next_index = batch[-1].index + 1
            yield batch

    async def _wait_commit(self, index: int) -> bool:
        """Wait until index is committed (True) or the node stopped first (False)."""
        async with self._commit_advanced:
            await self._commit_advanced.wait_for(
                lambda: self._commit_index >= index or self._stopped.is_set()
            )
        return self._commit_index >= index

    async def leader_changes(self) -> AsyncIterator[LeaderView | None]:
        yield LeaderView(self._id, self._address, self._term)
        await self._stopped.wait()

    def status(self) -> Status:
        member = MemberStatus(
            id=self._id,
            address=self._address,
            role="leader",
            in_sync=True,
            match_index=self._commit_index,
            reachable=True,
        )
        return Status(
            node_id=self._id,
            role="leader",
            term=self._term,
            leader_id=self._id,
            leader_address=self._address,
            commit_index=self._commit_index,
            members=(member,),
            config_epoch=2 if self._term else 0,
            min_insync=1,
            last_index=self._last_index,
        )

    def leader_address(self) -> str:
        return self._address

    def _append(self, kind: EntryKind, payload: bytes) -> Entry:
        self._last_index += 1
        entry = Entry(self._last_index, self._term, kind, payload)
        self._pending.append(entry)
        self._has_pending.set()
        return entry

    async def _write_loop(self) -> None:
        """Persist whatever accumulated while the previous fsync ran: one batch, one fsync."""
        assert self._store is not None
        while self._serving or self._pending:
            await self._has_pending.wait()
            self._has_pending.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            await self._run(self._store.save, batch)
            self._recent.extend(batch)
            async with self._commit_advanced:
                self._commit_index = batch[-1].index
                self._commit_advanced.notify_all()
        async with self._commit_advanced:
            self._commit_advanced.notify_all()

    def _recent_from(self, index: int) -> list[Entry]:
        """Committed entries from index on, if memory still holds index; else []."""
        if not self._recent or not self._recent[0].index <= index <= self._recent[-1].index:
            return []
        start = index - self._recent[0].index
        return [self._recent[i] for i in range(start, len(self._recent))]

    def _store_entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        assert self._store is not None
        return self._store.entries(lo, hi, max_bytes)

    async def _run(self, fn, *args):  # type: ignore[no-untyped-def]
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)
