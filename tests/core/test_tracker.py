"""The leader's tracker as tables (coord/core/tracker.py): who must have acked an entry
before it commits, which ISRs are not durable yet, who is being removed, and when a
member being removed is let go or forgotten."""

from __future__ import annotations

import pytest

from coord.core.config import ClusterConfig, View, config_entry
from coord.core.entry import Entry, EntryKind
from coord.core.log import MemoryStorage, RaftLog
from coord.core.tracker import Tracker, leaving_members, must_ack, written_isrs

THREE = ClusterConfig.create({1: "a", 2: "b", 3: "c"}, min_insync=1)


@pytest.mark.parametrize(
    ("isr", "written", "tracked", "members", "expected"),
    [
        ({1, 2, 3}, [], {1, 2, 3}, {1, 2, 3}, {1, 2, 3}),  # steady: the whole ISR
        ({1, 2}, [], {1, 2, 3}, {1, 2, 3}, {1, 2}),  # 3 dropped, durably: not waited for
        ({1, 2}, [{1, 2, 3}], {1, 2, 3}, {1, 2, 3}, {1, 2, 3}),  # drop not durable: still 3
        ({1}, [{1, 2, 3}, {1, 2}], {1, 2, 3}, {1, 2, 3}, {1, 2, 3}),  # every ISR since
        ({1, 2}, [], {1, 2, 3}, {1, 2}, {1, 2, 3}),  # 3 is being removed: must learn it
        ({1, 2}, [], {1, 2}, {1, 2}, {1, 2}),  # 3 let go or forgotten: no longer tracked
        ({1, 2, 3}, [], {1, 2}, {1, 2, 3}, {1, 2}),  # only the tracked can be counted
    ],
)
def test_must_ack(
    isr: set[int],
    written: list[set[int]],
    tracked: set[int],
    members: set[int],
    expected: set[int],
) -> None:
    assert must_ack(isr, written, tracked, members) == frozenset(expected)


def op(index: int) -> Entry:
    return Entry(index, 1, EntryKind.OP, b"x")


def log_of(durable: list[Entry], written: list[Entry]) -> RaftLog:
    storage = MemoryStorage()
    storage.save(None, None, durable)
    log = RaftLog(storage, 16)
    log.append(written)
    return log


def test_written_isrs_are_those_since_the_last_durable_config_when_the_view_is_not() -> None:
    shrunk, shrunk_more = THREE.with_isr({1, 2}), THREE.with_isr({1})
    durable = [config_entry(1, 0, THREE), op(2)]
    written = [config_entry(3, 1, shrunk), op(4), config_entry(5, 1, shrunk_more)]
    log = log_of(durable, written)
    view = View.of(config_entry(5, 1, shrunk_more))
    assert written_isrs(view, log) == [THREE.isr, shrunk.isr, shrunk_more.isr]
    steady = log_of(durable + written, [])
    assert written_isrs(view, steady) == []  # the view is durable: nothing more to rely on


def test_leaving_members_are_those_of_the_committed_config_not_in_the_view() -> None:
    without_3 = THREE.without_member(3)
    log = log_of([config_entry(1, 0, THREE), config_entry(2, 1, without_3)], [])
    view = View.of(config_entry(2, 1, without_3))
    assert leaving_members(view, log, commit=1) == {3}
    assert leaving_members(view, log, commit=2) == set()  # the removal committed


def test_a_dead_member_is_let_go_only_while_being_removed_and_forgotten_once_gone() -> None:
    tracker = Tracker()
    tracker.start_term([2, 3, 4], next_index=7, now_ms=0)
    assert not tracker.let_go(2, members={1, 2, 3})  # a member: the ISR rules deal with it
    assert tracker.let_go(4, members={1, 2, 3})  # being removed and dead: stop waiting
    assert not tracker.let_go(4, members={1, 2, 3})  # already gone
    tracker.track([2, 3, 5], next_index=9, now_ms=10)  # 5 added
    assert tracker.progress[5].next == 9 and tracker.progress[2].next == 7
    tracker.forget_departed(members={1, 2, 5})
    assert sorted(tracker.progress) == [2, 5]
    assert tracker.matches(own_id=1, own_stable=8) == {2: 0, 5: 0, 1: 8}
