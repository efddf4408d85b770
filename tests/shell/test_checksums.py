"""Log entries carry a CRC-32 on disk and on the wire.

A flipped bit in a stored entry or in one received from a peer is found when
it is read, and refused: it is never applied or acknowledged as if it were
what the leader wrote.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from coord.boundary import Entry, EntryKind
from coord.core.log import HardState
from coord.shell import codec
from coord.shell.log_store import CorruptLog, LogStore

ENTRIES = [Entry(i, 1, EntryKind.OP, b"op %d" % i) for i in range(1, 6)]


def test_the_checksum_covers_every_field() -> None:
    entry = ENTRIES[0]
    variants = [
        Entry(2, 1, EntryKind.OP, entry.payload),
        Entry(1, 2, EntryKind.OP, entry.payload),
        Entry(1, 1, EntryKind.NOOP, entry.payload),
        Entry(1, 1, EntryKind.OP, b"op 2"),
    ]
    assert len({entry.checksum, *(v.checksum for v in variants)}) == 5


def test_an_entry_damaged_in_transit_is_refused() -> None:
    wire = codec.entry_to_pb(ENTRIES[2])
    assert codec.entry_from_pb(wire) == ENTRIES[2]
    wire.payload = b"op 9"
    with pytest.raises(ValueError, match="fails its checksum"):
        codec.entry_from_pb(wire)
    wire.ClearField("crc")  # a peer of a release before checksums
    assert codec.entry_from_pb(wire).payload == b"op 9"


def test_an_entry_damaged_on_disk_is_found_when_read(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "log.db")
    store.save(HardState(1, 1), None, ENTRIES)
    assert store.entries(1, 6, 1 << 20) == ENTRIES
    with closing(sqlite3.connect(tmp_path / "log.db")) as db, db:
        db.execute("UPDATE log SET payload = ? WHERE idx = 4", (b"op X",))
    assert store.entries(1, 4, 1 << 20) == ENTRIES[:3]
    with pytest.raises(CorruptLog, match="entry 4 fails its checksum"):
        store.entries(1, 6, 1 << 20)
    store.close()


def test_a_log_from_before_checksums_opens_and_reads(tmp_path: Path) -> None:
    with closing(sqlite3.connect(tmp_path / "log.db")) as db, db:
        db.execute("CREATE TABLE log (idx INTEGER PRIMARY KEY, term INTEGER, kind INTEGER,"
                   " payload BLOB)")  # fmt: skip
        db.executemany(
            "INSERT INTO log VALUES (?, ?, ?, ?)",
            [(e.index, e.term, int(e.kind), e.payload) for e in ENTRIES[:2]],
        )
    store = LogStore(tmp_path / "log.db")
    assert store.entries(1, 3, 1 << 20) == ENTRIES[:2]
    store.save(None, None, ENTRIES[2:])
    assert store.entries(1, 6, 1 << 20) == ENTRIES
    store.close()
