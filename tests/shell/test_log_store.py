"""The log store's view of where the log starts, as the event loop reads it while the
worker thread compacts or installs a snapshot."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from coord.boundary import Entry, EntryKind
from coord.core.log import HardState, SnapshotMeta
from coord.shell.log_store import LogStore

ENTRIES = [Entry(i, 1, EntryKind.OP, b"op %d" % i) for i in range(1, 11)]


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = LogStore(tmp_path / "log.db")
    store.save(HardState(1, 1), None, ENTRIES)
    yield store
    store.close()


def first_index_at_commit(store: LogStore) -> list[int]:
    """The first index the loop would read, taken as the writer's COMMIT starts.

    The COMMIT makes the deleted rows invisible to the loop's reader before it returns
    (it also checkpoints the WAL, which takes long with large entries): by then the
    loop must already look for nothing below the new start.
    """
    seen: list[int] = []

    def traced(statement: str) -> None:
        if statement == "COMMIT":
            seen.append(store.first_index())

    store._writer.set_trace_callback(traced)
    return seen


def test_compaction_moves_the_start_before_the_rows_are_gone(store: LogStore) -> None:
    seen = first_index_at_commit(store)
    store.compact(6)
    assert seen == [7] and store.first_index() == 7
    assert [e.index for e in store.entries(7, 11, 1 << 20)] == [7, 8, 9, 10]


def test_an_installed_snapshot_moves_the_start_before_the_log_is_gone(store: LogStore) -> None:
    seen = first_index_at_commit(store)
    store.install(SnapshotMeta(40, 2, ENTRIES[0]))
    assert seen == [41] and (store.first_index(), store.last_index()) == (41, 40)


def test_a_compaction_that_fails_leaves_the_start_where_it_was(store: LogStore) -> None:
    def refuse(statement: str) -> None:
        if statement == "COMMIT":
            store._writer.interrupt()  # the COMMIT fails, as on a full disk

    store._writer.set_trace_callback(refuse)
    with pytest.raises(sqlite3.OperationalError):
        store.compact(6)
    store._writer.set_trace_callback(None)
    assert store.first_index() == 1
    assert [e.index for e in store.entries(1, 3, 1 << 20)] == [1, 2]
