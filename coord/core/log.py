"""The replicated log as the core sees it: a small in-memory tail over read-only storage.

Like etcd raft's ``raftLog``/``unstable`` over ``Storage``: entries the shell has
not yet reported durable (``persisted``) live in memory, plus a bounded cache of
recent durable ones (what the leader streams to followers); everything older
is read through :class:`Storage`, which the shell implements over SQLite. So
the core's memory does not grow with the length of the log.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from coord.core.entry import Entry, EntryKind
from coord.core.errors import LocalProtocolError

NO_NODE = 0


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on disk before any message that depends on it leaves."""

    term: int = 0
    voted_for: int = NO_NODE


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Where a snapshot ends: entries up to ``index`` live only in the state it copies.

    ``config`` is the latest config entry at or before ``index`` (None only for
    the empty snapshot at index 0 of a log that has never been compacted).
    """

    index: int = 0
    term: int = 0
    config: Entry | None = None


class Storage(Protocol):
    """Read-only access to what the shell has made durable (etcd raft's ``Storage``).

    The core reads only entries it was told are persisted, at indexes from
    ``first_index() - 1`` (the snapshot's, for its term) to ``last_index()``.
    The shell may compact behind its applied index at any time.
    """

    def hard_state(self) -> HardState: ...

    def snapshot(self) -> SnapshotMeta: ...

    def first_index(self) -> int:
        """The first index still in the log (``snapshot().index + 1``)."""
        ...

    def last_index(self) -> int:
        """The last index in the log (``snapshot().index`` when empty)."""
        ...

    def term(self, index: int) -> int:
        """The term at ``index``, for ``first_index() - 1 <= index <= last_index()``."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries in ``[lo, hi)``, at least one, stopping once ``max_bytes`` is passed."""
        ...

    def last_config(self, lo: int, hi: int) -> Entry | None:
        """The last ``CONFIG`` entry with ``lo <= index <= hi``, if any."""
        ...


def entry_size(entry: Entry) -> int:
    """Bytes an entry counts for in batch limits (payload plus a fixed header)."""
    return len(entry.payload) + 24


def take_batch(entries: Iterable[Entry], max_bytes: int, used: int = 0) -> list[Entry]:
    """The longest prefix that keeps ``used + size`` within ``max_bytes``; at least one
    entry when nothing is used yet, so one oversized entry still gets through."""
    batch: list[Entry] = []
    size = used
    for entry in entries:
        size += entry_size(entry)
        if (batch or used) and size > max_bytes:
            break
        batch.append(entry)
    return batch


class MemoryStorage:
    """:class:`Storage` in memory, with the writes a shell performs; for tests and the simulator."""

    def __init__(self) -> None:
        self._hard_state = HardState()
        self._snapshot = SnapshotMeta()
        self._entries: list[Entry] = []

    def hard_state(self) -> HardState:
        return self._hard_state

    def snapshot(self) -> SnapshotMeta:
        return self._snapshot

    def first_index(self) -> int:
        return self._snapshot.index + 1

    def last_index(self) -> int:
        return self._snapshot.index + len(self._entries)

    def term(self, index: int) -> int:
        if index == self._snapshot.index:
            return self._snapshot.term
        return self._entry(index).term

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        self._entry(lo)
        offset = self.first_index()
        return take_batch(self._entries[lo - offset : hi - offset], max_bytes)

    def last_config(self, lo: int, hi: int) -> Entry | None:
        offset = self.first_index()
        for entry in reversed(self._entries[max(lo - offset, 0) : max(hi - offset + 1, 0)]):
            if entry.kind is EntryKind.CONFIG:
                return entry
        return None

    def save(
        self, hard_state: HardState | None, snapshot: SnapshotMeta | None, entries: Sequence[Entry]
    ) -> None:
        """Make one ``Ready`` durable: snapshot, hard state, entries (replacing a suffix)."""
        if snapshot is not None:
            self._snapshot = snapshot
            self._entries = []
        if hard_state is not None:
            self._hard_state = hard_state
        if entries:
            first = entries[0].index
            if not self.first_index() <= first <= self.last_index() + 1:
                raise LocalProtocolError(f"entries from {first} do not continue the stored log")
            del self._entries[first - self.first_index() :]
            self._entries.extend(entries)

    def compact(self, index: int) -> None:
        """Drop entries up to ``index`` (the shell does this behind its applied index)."""
        if index <= self._snapshot.index:
            return
        config = self.last_config(self.first_index(), index) or self._snapshot.config
        term = self.term(index)
        del self._entries[: index - self._snapshot.index]
        self._snapshot = SnapshotMeta(index, term, config)

    def _entry(self, index: int) -> Entry:
        if not self.first_index() <= index <= self.last_index():
            raise LocalProtocolError(f"index {index} is outside the stored log")
        return self._entries[index - self.first_index()]


class RaftLog:
    """A node's log: the storage it reads, plus the tail not yet known durable.

    ``stable_last`` is the last index the shell reported persisted; entries
    after it are in ``_unstable``. ``_handed_out`` is the last unstable index
    already given to the shell in a ``Ready`` (it moves back when a conflicting
    suffix is replaced before it was persisted).
    """

    def __init__(self, storage: Storage, cached_entries: int) -> None:
        self._storage = storage
        self.snapshot = storage.snapshot()
        self.stable_last = storage.last_index()
        self._handed_out = self.stable_last
        self._unstable: list[Entry] = []
        self._cache: deque[Entry] = deque(maxlen=cached_entries)
        # The latest config entry at or before stable_last (None: there is none), once
        # known: config entries are rare and far back, and a follower asks on every
        # Append, so storage is asked again only after a cut or a snapshot.
        self._stable_config: Entry | None = None
        self._stable_config_known = False
        # The config entries among those in memory (unstable or cached), in index order,
        # so the question a follower asks on every Append never scans memory's entries.
        self._memory_configs: list[Entry] = []

    # -- reading ---------------------------------------------------------------

    def last_index(self) -> int:
        return self._unstable[-1].index if self._unstable else self.stable_last

    def last_term(self) -> int:
        term = self.term(self.last_index())
        return self.snapshot.term if term is None else term

    def first_available(self) -> int:
        """The first index whose entry can still be read (older ones are compacted)."""
        return max(self.snapshot.index, self._storage.first_index() - 1) + 1

    def term(self, index: int) -> int | None:
        """The term at ``index``, or None if it is beyond the log or compacted away."""
        entry = self._in_memory(index)
        if entry is not None:
            return entry.term
        if index == self.snapshot.index:
            return self.snapshot.term
        if not self.first_available() - 1 <= index <= self.stable_last:
            return None
        return self._storage.term(index)

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry] | None:
        """Entries in ``[lo, hi)`` within ``max_bytes`` (at least one); None if compacted."""
        if lo < self.first_available():
            return None
        hi = min(hi, self.last_index() + 1)
        if lo >= hi:
            return []
        memory_start = self._memory_start()
        batch: list[Entry] = []
        if lo < memory_start:
            batch = self._storage.entries(lo, min(hi, memory_start), max_bytes)
            lo = batch[-1].index + 1
            if lo < min(hi, memory_start):
                return batch
        in_memory = (self._in_memory(i) for i in range(lo, hi))
        used = sum(entry_size(e) for e in batch)
        return batch + take_batch((e for e in in_memory if e is not None), max_bytes, used)

    def last_config(self, up_to: int) -> Entry | None:
        """The latest config entry at or before ``up_to`` (with ``up_to`` last: the view)."""
        memory_start = self._memory_start()
        for entry in reversed(self._memory_configs):
            if entry.index < memory_start:
                break  # evicted from the cache since: storage has it
            if entry.index <= up_to:
                return entry
        hi = min(up_to, self.stable_last, memory_start - 1)
        latest = self._latest_stable_config()
        if latest is None or latest.index <= hi:
            return latest  # the newest stable one is at or below hi: nothing newer there
        return self._stored_config(hi)

    def _latest_stable_config(self) -> Entry | None:
        if not self._stable_config_known:
            self._stable_config = self._stored_config(self.stable_last)
            self._stable_config_known = True
        return self._stable_config

    def _stored_config(self, hi: int) -> Entry | None:
        """The latest config entry at or before hi in storage, or in a snapshot's config
        (compaction moves the latest there)."""
        stored = self._storage.last_config(self.first_available(), hi)
        if stored is not None:
            return stored
        snapshots = [s.config for s in (self.snapshot, self._storage.snapshot()) if s.config]
        return max(snapshots, key=lambda e: e.index, default=None)

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """The largest index <= ``index`` whose term is <= ``term``: where a leader should retry."""
        index = min(index, self.last_index())
        while index >= self.first_available():
            found = self.term(index)
            if found is None or found <= term:
                return index
            index -= 1
        return self.first_available() - 1

    # -- writing ---------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> int | None:
        """Add entries, replacing any conflicting suffix; returns where it was cut, if it was."""
        if not entries:
            return None
        first = entries[0].index
        if first > self.last_index() + 1 or first <= self.snapshot.index:
            raise LocalProtocolError(f"entries from {first} do not continue the log")
        cut = first if first <= self.last_index() else None
        if cut is not None:
            self._truncate(cut)
        self._unstable.extend(entries)
        configs = [e for e in entries if e.kind is EntryKind.CONFIG]
        if configs:
            memory_start = self._memory_start()
            self._memory_configs = [
                e for e in self._memory_configs if e.index >= memory_start
            ] + configs
        return cut

    def take_unpersisted(self) -> tuple[Entry, ...]:
        """Entries the shell has not been given yet; it must write them before sending."""
        fresh = tuple(e for e in self._unstable if e.index > self._handed_out)
        self._handed_out = self.last_index()
        return fresh

    def cached_count(self) -> int:
        """How many durable entries memory holds: never more than ``cached_entries``."""
        return len(self._cache)

    def has_unpersisted(self) -> bool:
        return self._handed_out < self.last_index()

    def stable_to(self, index: int, term: int) -> bool:
        """The shell made entries up to ``(index, term)`` durable; False if that is stale."""
        entry = self._in_memory(index)
        if index <= self.stable_last or entry is None or entry.term != term:
            return False
        count = index - self.stable_last
        configs = [e for e in self._unstable[:count] if e.kind is EntryKind.CONFIG]
        if configs:
            self._stable_config, self._stable_config_known = configs[-1], True
        self._cache.extend(self._unstable[:count])
        del self._unstable[:count]
        self.stable_last = index
        return True

    def install(self, meta: SnapshotMeta) -> None:
        """Forget the whole log: it now starts after the snapshot the shell installs."""
        self.snapshot = meta
        self.stable_last = self._handed_out = meta.index
        self._unstable.clear()
        self._cache.clear()
        self._memory_configs.clear()
        self._stable_config_known = False

    # -- internals -------------------------------------------------------------

    def _memory_start(self) -> int:
        if self._cache:
            return self._cache[0].index
        return self._unstable[0].index if self._unstable else self.stable_last + 1

    def _in_memory(self, index: int) -> Entry | None:
        if self._unstable and self._unstable[0].index <= index <= self._unstable[-1].index:
            return self._unstable[index - self._unstable[0].index]
        if self._cache and self._cache[0].index <= index <= self._cache[-1].index:
            return self._cache[index - self._cache[0].index]
        return None

    def _truncate(self, cut: int) -> None:
        if cut <= self.snapshot.index:
            raise LocalProtocolError(f"cannot cut the log at {cut}: it is in the snapshot")
        self._handed_out = min(self._handed_out, cut - 1)
        while self._memory_configs and self._memory_configs[-1].index >= cut:
            self._memory_configs.pop()
        if cut <= self.stable_last:
            self.stable_last = cut - 1
            self._stable_config_known = False  # stored entries from cut on are replaced
            self._unstable.clear()
            while self._cache and self._cache[-1].index >= cut:
                self._cache.pop()
        else:
            del self._unstable[cut - self._unstable[0].index :]
