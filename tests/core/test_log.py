"""The log: storage protocol, in-memory tail, truncation, compaction, bounded memory."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coord.boundary import Entry, EntryKind
from coord.core.config import ClusterConfig, config_entry
from coord.core.errors import LocalProtocolError
from coord.core.log import MemoryStorage, RaftLog, SnapshotMeta


def op(index: int, term: int, payload: bytes = b"x") -> Entry:
    return Entry(index, term, EntryKind.OP, payload)


def durable_log(entries: list[Entry], cached: int = 4) -> tuple[MemoryStorage, RaftLog]:
    storage = MemoryStorage()
    storage.save(None, None, entries)
    return storage, RaftLog(storage, cached)


def test_unpersisted_entries_are_handed_out_once_and_stay_in_memory_until_persisted() -> None:
    storage, log = durable_log([op(1, 1)])
    log.append([op(2, 1), op(3, 1)])
    assert [e.index for e in log.take_unpersisted()] == [2, 3]
    assert log.take_unpersisted() == ()
    assert log.stable_last == 1 and log.term(3) == 1
    storage.save(None, None, [op(2, 1), op(3, 1)])
    assert log.stable_to(3, 1)
    assert log.stable_last == 3


def test_conflicting_suffix_is_cut_and_handed_out_again_from_the_cut() -> None:
    storage, log = durable_log([op(1, 1), op(2, 1), op(3, 1)])
    log.append([op(4, 1)])
    log.take_unpersisted()
    assert log.append([op(3, 2), op(4, 2)]) == 3
    fresh = log.take_unpersisted()
    assert [(e.index, e.term) for e in fresh] == [(3, 2), (4, 2)]
    storage.save(None, None, fresh)
    assert [storage.term(i) for i in (1, 2, 3, 4)] == [1, 1, 2, 2]


def test_a_stale_persisted_report_after_a_cut_is_ignored() -> None:
    _, log = durable_log([op(1, 1)])
    log.append([op(2, 1), op(3, 1)])
    log.take_unpersisted()
    log.append([op(2, 2)])
    assert not log.stable_to(3, 1)
    assert log.stable_last == 1


def test_entries_are_read_across_storage_and_memory_within_the_byte_budget() -> None:
    _, log = durable_log([op(i, 1, b"a" * 100) for i in range(1, 11)], cached=3)
    log.append([op(11, 1, b"a" * 100)])
    assert [e.index for e in log.entries(1, 12, 10_000) or []] == list(range(1, 12))
    assert [e.index for e in log.entries(2, 12, 250) or []] == [2, 3]
    assert [e.index for e in log.entries(5, 6, 1) or []] == [5]


def test_compacted_entries_read_as_none_so_the_leader_sends_a_snapshot() -> None:
    storage, log = durable_log([op(i, 1) for i in range(1, 6)])
    storage.compact(3)
    assert log.entries(2, 5, 1000) is None
    assert log.term(2) is None and log.term(3) == 1
    assert log.first_available() == 4


def test_memory_does_not_grow_with_the_log() -> None:
    storage = MemoryStorage()
    log = RaftLog(storage, cached_entries=16)
    for index in range(1, 2001):
        log.append([op(index, 1)])
        storage.save(None, None, log.take_unpersisted())
        log.stable_to(index, 1)
    assert log.cached_count() <= 16 and log.last_index() == log.stable_last
    assert log.term(5) == 1 and log.last_index() == 2000


def test_the_view_is_the_latest_config_committed_or_not_and_survives_compaction() -> None:
    first = ClusterConfig.create({1: "a", 2: "b"})
    second = first.with_isr({1})
    storage, log = durable_log([config_entry(1, 0, first), op(2, 1), config_entry(3, 1, second)])
    log.append([op(4, 1)])
    assert log.last_config(4) == config_entry(3, 1, second)
    assert log.last_config(2) == config_entry(1, 0, first)
    storage.compact(3)
    assert storage.snapshot().config == config_entry(3, 1, second)
    assert RaftLog(storage, 4).last_config(3) == config_entry(3, 1, second)


def test_installing_a_snapshot_forgets_the_whole_log() -> None:
    config = config_entry(1, 0, ClusterConfig.create({1: "a"}))
    _, log = durable_log([config, op(2, 1)])
    log.install(SnapshotMeta(10, 3, config))
    assert log.last_index() == 10 and log.last_term() == 3 and log.term(2) is None


def test_storage_refuses_a_write_that_leaves_a_hole() -> None:
    storage = MemoryStorage()
    with pytest.raises(LocalProtocolError):
        storage.save(None, None, [op(3, 1)])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("apc"), st.integers(0, 6), st.booleans()), max_size=40))
def test_last_config_agrees_with_the_whole_log_through_cuts_and_compaction(
    steps: list[tuple[str, int, bool]],
) -> None:
    """The remembered storage answers (RaftLog._stored_config) never go stale: after any
    appends (some of them config entries, some cutting a suffix), persists and
    compactions, last_config(i) is the latest config entry at or before i in the log."""
    storage, log = durable_log([config_entry(1, 1, ClusterConfig.create({1: "a"}))], cached=2)
    term = 1
    for action, n, is_config in steps:
        if action == "a":  # append, maybe cutting back n entries first
            first = max(log.first_available(), log.last_index() + 1 - n, log.snapshot.index + 1)
            term += 1
            kind = EntryKind.CONFIG if is_config else EntryKind.OP
            log.append([Entry(first, term, kind, b"c%d" % first)])
        elif action == "p":  # persist what was handed out
            fresh = log.take_unpersisted()
            if fresh:
                storage.save(None, None, fresh)
                log.stable_to(fresh[-1].index, fresh[-1].term)
        elif log.stable_last > storage.first_index() + n:  # compact up to a stable index
            storage.compact(storage.first_index() + n)
        whole = {e.index: e for e in storage.entries(storage.first_index(), 10**6, 10**9)}
        whole |= {e.index: e for e in log.entries(log.stable_last + 1, 10**6, 10**9) or []}
        for up_to in range(log.first_available(), log.last_index() + 1):
            expected = max(
                (e for i, e in whole.items() if i <= up_to and e.kind is EntryKind.CONFIG),
                key=lambda e: e.index,
                default=storage.snapshot().config,
            )
            assert log.last_config(up_to) == expected, (up_to, steps)


def persist(storage: MemoryStorage, log: RaftLog) -> None:
    fresh = log.take_unpersisted()
    storage.save(None, None, fresh)
    assert log.stable_to(fresh[-1].index, fresh[-1].term)


def config(index: int, term: int, members: dict[int, str]) -> Entry:
    return config_entry(index, term, ClusterConfig.create(members))


def test_last_config_sees_a_config_that_left_the_cache_and_forgets_one_cut_away() -> None:
    storage, log = durable_log([config(1, 1, {1: "a"})], cached=2)
    assert log.last_config(1) == config(1, 1, {1: "a"})  # known from here on
    log.append([config(2, 1, {1: "a", 2: "b"}), op(3, 1), op(4, 1), op(5, 1)])
    persist(storage, log)  # entry 2 is now stable and below the cache
    assert log.last_config(5) == config(2, 1, {1: "a", 2: "b"})
    log.append([op(2, 2)])  # a new leader's entry replaces the config entry
    persist(storage, log)
    log.append([op(3, 2), op(4, 2), op(5, 2)])
    persist(storage, log)
    assert log.last_config(5) == config(1, 1, {1: "a"})
