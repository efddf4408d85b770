"""The durable op log and hard state in SQLite (WAL, ``synchronous=FULL``).

Every call is blocking and does its work in one transaction, so one call is one
fsync however many entries it carries: the shell batches concurrent proposals
into one :meth:`LogStore.save` (group commit). The store is used from a single
worker thread; the schema is plain so an operator can inspect it with
``sqlite3``.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

import sqlite_utils

from coord.boundary import Entry, EntryKind
from coord.metrics import LOG_ENTRIES, LOG_FSYNCS


@dataclass(frozen=True, slots=True)
class HardState:
    """What a node must never forget across a crash: its term and its vote in it."""

    term: int = 0
    voted_for: int = 0


def open_sqlite(path: str | os.PathLike[str], synchronous: str) -> sqlite3.Connection:
    """A connection in WAL mode with explicit transactions, usable from a worker thread."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


class LogStore:
    """Append-only entries ``(idx, term, kind, payload)`` plus the hard state."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._conn = open_sqlite(path, "FULL")
        db = sqlite_utils.Database(self._conn)
        db["log"].create(
            {"idx": int, "term": int, "kind": int, "payload": bytes}, pk="idx", if_not_exists=True
        )
        db["hard_state"].create(
            {"id": int, "term": int, "voted_for": int}, pk="id", if_not_exists=True
        )
        db["log_meta"].create(
            {"id": int, "compacted_index": int, "compacted_term": int}, pk="id", if_not_exists=True
        )

    def close(self) -> None:
        self._conn.close()

    def hard_state(self) -> HardState:
        row = self._conn.execute("SELECT term, voted_for FROM hard_state WHERE id = 0").fetchone()
        return HardState(*row) if row else HardState()

    def save(
        self,
        entries: Sequence[Entry] = (),
        hard_state: HardState | None = None,
        truncate_after: int | None = None,
    ) -> None:
        """Persist a hard state, drop a conflicting suffix and append, atomically."""
        with self._transaction():
            if hard_state is not None:
                self._conn.execute(
                    "INSERT OR REPLACE INTO hard_state (id, term, voted_for) VALUES (0, ?, ?)",
                    (hard_state.term, hard_state.voted_for),
                )
            if truncate_after is not None:
                self._conn.execute("DELETE FROM log WHERE idx > ?", (truncate_after,))
            self._conn.executemany(
                "INSERT INTO log (idx, term, kind, payload) VALUES (?, ?, ?, ?)",
                [(e.index, e.term, int(e.kind), e.payload) for e in entries],
            )
        LOG_FSYNCS.inc()
        LOG_ENTRIES.inc(len(entries))

    def compacted(self) -> tuple[int, int]:
        """(index, term) of the last entry dropped by compaction, (0, 0) if none."""
        row = self._conn.execute(
            "SELECT compacted_index, compacted_term FROM log_meta WHERE id = 0"
        ).fetchone()
        return (row[0], row[1]) if row else (0, 0)

    def compact(self, up_to: int) -> None:
        """Drop entries up to and including up_to; the state machine holds their effect."""
        term = self.term_at(up_to)
        if term is None:
            return
        with self._transaction():
            self._conn.execute(
                "INSERT OR REPLACE INTO log_meta (id, compacted_index, compacted_term)"
                " VALUES (0, ?, ?)",
                (up_to, term),
            )
            self._conn.execute("DELETE FROM log WHERE idx <= ?", (up_to,))

    def first_index(self) -> int:
        return self.compacted()[0] + 1

    def last_index(self) -> int:
        row = self._conn.execute("SELECT max(idx) FROM log").fetchone()
        return row[0] if row[0] is not None else self.compacted()[0]

    def term_at(self, index: int) -> int | None:
        """The term of the entry at index; None when it is compacted away or absent."""
        compacted_index, compacted_term = self.compacted()
        if index == compacted_index:
            return compacted_term
        row = self._conn.execute("SELECT term FROM log WHERE idx = ?", (index,)).fetchone()
        return row[0] if row else None

    def entries(self, lo: int, hi: int, max_bytes: int = 1 << 20) -> list[Entry]:
        """Entries with lo <= index < hi, stopping after max_bytes of payload (at least one)."""
        out: list[Entry] = []
        size = 0
        rows = self._conn.execute(
            "SELECT idx, term, kind, payload FROM log WHERE idx >= ? AND idx < ? ORDER BY idx",
            (lo, hi),
        )
        for idx, term, kind, payload in rows:
            size += len(payload)
            if out and size > max_bytes:
                break
            out.append(Entry(idx, term, EntryKind(kind), payload))
        return out

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error: a batch lands whole or not at all."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._conn.execute("ROLLBACK" if exc_type else "COMMIT")
