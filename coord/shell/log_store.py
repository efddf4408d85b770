"""The durable log, hard state and snapshot marker in SQLite (WAL, ``synchronous=FULL``).

It is the :class:`coord.core.log.Storage` the protocol core reads, plus the writes
the shell performs for each ``Ready``. One :meth:`LogStore.save` is one
transaction and one fsync however many entries it carries, which is what group
commit rests on. Writes run on one worker thread over their own connection;
reads come from the event loop over a second connection, which WAL lets run
beside the writer. The schema is plain so an operator can read it with
``sqlite3``.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Sequence

import sqlite_utils

from coord.core.entry import Entry, EntryKind
from coord.core.errors import LocalProtocolError
from coord.core.log import HardState, SnapshotMeta, take_batch
from coord.shell.metrics import LOG_ENTRIES, LOG_FSYNC_SECONDS, LOG_FSYNCS

_ENTRY_COLUMNS = "idx, term, kind, payload, crc"


class CorruptLog(sqlite3.DatabaseError):
    """A stored entry fails its checksum: the log file is damaged (see docs/design.md,
    "Rebuilding a node")."""


def open_sqlite(path: str | os.PathLike[str], synchronous: str) -> sqlite3.Connection:
    """A connection in WAL mode with explicit transactions, usable from a worker thread."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


def _entry(row: tuple[int, int, int, bytes, int | None]) -> Entry:
    """An entry read back; entries written before checksums (crc NULL) are taken as stored."""
    entry = Entry(row[0], row[1], EntryKind(row[2]), bytes(row[3]))
    if row[4] is not None and row[4] != entry.checksum:
        raise CorruptLog(f"log entry {entry.index} fails its checksum: the log file is damaged")
    return entry


class LogStore:
    """Entries ``(idx, term, kind, payload)``, the hard state, and where the log starts."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._writer = open_sqlite(path, "FULL")
        db = sqlite_utils.Database(self._writer)
        db["log"].create(
            {"idx": int, "term": int, "kind": int, "payload": bytes, "crc": int},
            pk="idx",
            if_not_exists=True,
        )
        if "crc" not in db["log"].columns_dict:  # a log from before checksums
            db["log"].add_column("crc", int)
        db["hard_state"].create(
            {"id": int, "term": int, "voted_for": int}, pk="id", if_not_exists=True
        )
        db["snapshot"].create(
            {"id": int, "idx": int, "term": int, "config_idx": int, "config_term": int,
             "config_payload": bytes, "restore_pending": int},
            pk="id", if_not_exists=True,
        )  # fmt: skip
        self._writer.execute(
            f"CREATE INDEX IF NOT EXISTS log_configs ON log (idx) WHERE kind = {EntryKind.CONFIG:d}"
        )
        self._reader = open_sqlite(path, "FULL")
        self._hard_state = self._load_hard_state()
        self._snapshot = self._load_snapshot()
        row = self._reader.execute("SELECT max(idx) FROM log").fetchone()
        self._last_index = row[0] if row[0] is not None else self._snapshot.index

    def close(self) -> None:
        self._writer.close()
        self._reader.close()

    # -- Storage (read by the core, on the event loop) ------------------------------

    def hard_state(self) -> HardState:
        return self._hard_state

    def snapshot(self) -> SnapshotMeta:
        return self._snapshot

    def first_index(self) -> int:
        return self._snapshot.index + 1

    def last_index(self) -> int:
        return self._last_index

    def term(self, index: int) -> int:
        if index == self._snapshot.index:
            return self._snapshot.term
        row = self._reader.execute("SELECT term FROM log WHERE idx = ?", (index,)).fetchone()
        if row is None:
            raise LocalProtocolError(f"index {index} is outside the stored log")
        return row[0]

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        if not self.first_index() <= lo <= self._last_index:
            raise LocalProtocolError(f"index {lo} is outside the stored log")
        rows = self._reader.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM log WHERE idx >= ? AND idx < ? ORDER BY idx",
            (lo, hi),
        )
        return take_batch(map(_entry, rows), max_bytes)

    def last_config(self, lo: int, hi: int) -> Entry | None:
        row = self._reader.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM log WHERE kind = ? AND idx >= ? AND idx <= ?"
            " ORDER BY idx DESC LIMIT 1",
            (int(EntryKind.CONFIG), lo, hi),
        ).fetchone()
        return _entry(row) if row else None

    # -- writes (one worker thread) ------------------------------------------------------

    def save(
        self,
        hard_state: HardState | None,
        snapshot: SnapshotMeta | None,
        entries: Sequence[Entry],
        *,
        restore_pending: bool = False,
    ) -> None:
        """Make one Ready durable in one transaction: snapshot marker, hard state, entries.

        Entries replace any stored suffix from their first index on: that is how
        a conflicting suffix is truncated.
        """
        last_index = previous_last = self._last_index
        previous_snapshot = self._snapshot
        started = time.perf_counter()
        try:
            with _Transaction(self._writer):
                if snapshot is not None:
                    self._writer.execute("DELETE FROM log")
                    self._write_snapshot(snapshot, restore_pending)
                    last_index = snapshot.index
                    # Published before the COMMIT, as in compact: the log is gone for the
                    # loop's reader before the COMMIT returns.
                    self._snapshot, self._last_index = snapshot, last_index
                last_index = self._save_rest(hard_state, entries, last_index)
        except BaseException:
            self._snapshot, self._last_index = previous_snapshot, previous_last
            raise
        LOG_FSYNC_SECONDS.observe(time.perf_counter() - started)
        LOG_FSYNCS.inc()
        LOG_ENTRIES.inc(len(entries))
        if hard_state is not None:
            self._hard_state = hard_state
        self._last_index = last_index

    def _save_rest(
        self, hard_state: HardState | None, entries: Sequence[Entry], last_index: int
    ) -> int:
        """The hard state and entries of :meth:`save`, inside its transaction; returns the
        new last index."""
        if hard_state is not None:
            self._writer.execute(
                "INSERT OR REPLACE INTO hard_state (id, term, voted_for) VALUES (0, ?, ?)",
                (hard_state.term, hard_state.voted_for),
            )
        if not entries:
            return last_index
        first = entries[0].index
        lowest = self._snapshot.index + 1
        if not lowest <= first <= last_index + 1:
            raise LocalProtocolError(f"entries from {first} do not continue the log")
        self._writer.execute("DELETE FROM log WHERE idx >= ?", (first,))
        self._writer.executemany(
            "INSERT INTO log (idx, term, kind, payload, crc) VALUES (?, ?, ?, ?, ?)",
            [(e.index, e.term, int(e.kind), e.payload, e.checksum) for e in entries],
        )
        return entries[-1].index

    def install(self, snapshot: SnapshotMeta) -> None:
        """Start the log after a snapshot received from the leader, marking the state's
        restore from it as pending until :meth:`restored` says it is done.

        The marker makes the pair atomic across a crash: on start, a pending
        restore is redone before anything is applied.
        """
        self.save(None, snapshot, (), restore_pending=True)

    def restored(self) -> None:
        self._writer.execute("UPDATE snapshot SET restore_pending = 0 WHERE id = 0")

    def pending_restore(self) -> int | None:
        """The index of a snapshot whose restore into the state may not have finished."""
        row = self._reader.execute(
            "SELECT idx FROM snapshot WHERE id = 0 AND restore_pending = 1"
        ).fetchone()
        return row[0] if row else None

    def compact(self, index: int) -> None:
        """Drop entries up to index: the state machine durably holds their effect."""
        if index <= self._snapshot.index or index > self._last_index:
            return
        previous = self._snapshot
        try:
            with _Transaction(self._writer):
                # Read through the writer's own connection: the reader belongs to the loop.
                term = self._writer.execute(
                    "SELECT term FROM log WHERE idx = ?", (index,)
                ).fetchone()
                row = self._writer.execute(
                    f"SELECT {_ENTRY_COLUMNS} FROM log WHERE kind = ? AND idx <= ?"
                    " ORDER BY idx DESC LIMIT 1",
                    (int(EntryKind.CONFIG), index),
                ).fetchone()
                config = _entry(row) if row else previous.config
                self._write_snapshot(SnapshotMeta(index, term[0], config))
                self._writer.execute("DELETE FROM log WHERE idx <= ?", (index,))
                # Published before the COMMIT: the loop's reader sees the rows gone as soon
                # as the COMMIT writes them, before it returns (it also checkpoints the
                # WAL, which takes long with large entries), and the loop must never look
                # for an entry that is gone. Until then it treats them as gone already.
                self._snapshot = SnapshotMeta(index, term[0], config)
        except BaseException:
            self._snapshot = previous
            raise

    def _write_snapshot(self, snapshot: SnapshotMeta, restore_pending: bool = False) -> None:
        config = snapshot.config
        self._writer.execute(
            "INSERT OR REPLACE INTO snapshot"
            " (id, idx, term, config_idx, config_term, config_payload, restore_pending)"
            " VALUES (0, ?, ?, ?, ?, ?, ?)",
            (
                snapshot.index,
                snapshot.term,
                config.index if config else 0,
                config.term if config else 0,
                config.payload if config else b"",
                int(restore_pending),
            ),
        )

    def _load_hard_state(self) -> HardState:
        row = self._reader.execute("SELECT term, voted_for FROM hard_state WHERE id = 0").fetchone()
        return HardState(*row) if row else HardState()

    def _load_snapshot(self) -> SnapshotMeta:
        row = self._reader.execute(
            "SELECT idx, term, config_idx, config_term, config_payload FROM snapshot WHERE id = 0"
        ).fetchone()
        if row is None:
            return SnapshotMeta()
        index, term, config_index, config_term, payload = row
        config = Entry(config_index, config_term, EntryKind.CONFIG, bytes(payload))
        return SnapshotMeta(index, term, config if config_index else None)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error: a batch lands whole or not at all."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self._conn.execute("COMMIT")
                return
            except sqlite3.Error:
                self._rollback()  # a COMMIT refused for a full disk may leave it open
                raise
        self._rollback()

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")
