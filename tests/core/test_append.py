"""A follower's Append and snapshot decisions as tables (coord/core/append.py).

Our log is written as the term at each index (``[1, 1, 2]``: index 1 and 2 of
term 1, index 3 of term 2); the leader's entries likewise, from ``prev_index + 1``.
"""

from __future__ import annotations

import pytest

from coord.core.append import (
    Accepted,
    TermOf,
    accept_append,
    installs_snapshot,
    new_suffix,
    view_after_write,
)
from coord.core.config import ClusterConfig, View, config_entry
from coord.core.entry import Entry, EntryKind
from coord.core.messages import Append


def log(terms: list[int], compacted: int = 0) -> TermOf:
    """``term_of`` for a log holding ``terms`` at 1..; with a snapshot at ``compacted``,
    the entries before it are gone (its own term is still known)."""
    held = {index: term for index, term in enumerate(terms, 1) if index >= compacted}
    return held.get


def entries(first: int, terms: list[int]) -> tuple[Entry, ...]:
    return tuple(Entry(first + i, term, EntryKind.OP, b"") for i, term in enumerate(terms))


def append(prev_index: int, prev_term: int, terms: list[int], commit: int) -> Append:
    return Append(
        3, 1, prev_index, prev_term, entries(prev_index + 1, terms), commit, 1, (1,), 0, 0
    )


@pytest.mark.parametrize(
    ("ours", "commit", "msg", "expected"),
    [
        # prev matches: the new entries are written, the ack claims their last
        ([1, 1], 0, append(2, 1, [2, 2], 0), (3, 4, 4, 0)),
        # a heartbeat: nothing to write, the ack claims prev, the commit follows the leader's
        ([1, 1, 2], 0, append(2, 1, [], 2), (None, None, 2, 2)),
        # the commit never passes what the Append shows we hold
        ([1, 1, 2], 0, append(1, 1, [], 3), (None, None, 1, 1)),
        # entries we hold already: nothing written (a duplicate or reordered Append)
        ([1, 1, 2], 0, append(1, 1, [1, 2], 0), (None, None, 3, 0)),
        # a conflict at 3: the suffix from 3 is replaced
        ([1, 1, 2, 2], 1, append(1, 1, [1, 3, 3], 0), (3, 4, 4, 1)),
        # prev before our commit index: connects at our commit, skips what it covers
        ([1, 1, 2], 3, append(1, 1, [1, 2, 2], 5), (4, 4, 4, 4)),
        # the commit index never moves back
        ([1, 1, 2], 3, append(3, 2, [], 1), (None, None, 3, 3)),
    ],
)
def test_accept_append(
    ours: list[int],
    commit: int,
    msg: Append,
    expected: tuple[int | None, int | None, int, int],
) -> None:
    first, last, match, new_commit = expected
    suffix = tuple(e for e in msg.entries if first is not None and first <= e.index <= last)
    assert accept_append(msg, commit, log(ours)) == Accepted(suffix, match, new_commit)


@pytest.mark.parametrize(
    ("ours", "commit", "msg"),
    [
        ([1, 1], 0, append(3, 1, [1], 0)),  # a gap: we lack prev
        ([1, 1, 2], 0, append(3, 3, [3], 0)),  # prev of another term
        ([1, 1, 2], 2, append(3, 3, [], 3)),  # even a heartbeat
    ],
)
def test_an_append_that_does_not_connect_is_rejected(
    ours: list[int], commit: int, msg: Append
) -> None:
    assert accept_append(msg, commit, log(ours)) is None


@pytest.mark.parametrize(
    ("ours", "first", "leaders", "expected_first"),
    [
        ([1, 1], 1, [1, 1], None),  # all held
        ([1, 1], 2, [1, 2], 3),  # beyond our log
        ([1, 1, 1], 2, [1, 2, 2], 3),  # a conflict cuts from there
        ([], 1, [1], 1),  # an empty log holds nothing
    ],
)
def test_new_suffix(
    ours: list[int], first: int, leaders: list[int], expected_first: int | None
) -> None:
    sent = entries(first, leaders)
    expected = tuple(e for e in sent if expected_first is not None and e.index >= expected_first)
    assert new_suffix(sent, log(ours)) == expected


@pytest.mark.parametrize(
    ("ours", "compacted", "index", "index_term", "commit", "expected"),
    [
        ([1, 1, 2], 0, 5, 2, 3, True),  # beyond our log: install
        ([1, 1, 2, 2, 2], 0, 4, 3, 3, True),  # we hold another term there: install
        ([1, 1, 2, 2, 2], 0, 4, 2, 3, False),  # we hold its last entry: keep our log
        ([1, 1, 2], 0, 3, 2, 3, False),  # not beyond our commit index
        ([1, 1, 2], 0, 2, 1, 3, False),  # behind it
        ([1, 1, 2, 2], 4, 6, 2, 4, True),  # our log compacted: beyond it, install
    ],
)
def test_installs_snapshot(
    ours: list[int], compacted: int, index: int, index_term: int, commit: int, expected: bool
) -> None:
    assert installs_snapshot(index, index_term, commit, log(ours, compacted)) is expected


CONFIG = ClusterConfig.create({1: "a", 2: "b", 3: "c"})
OLD = config_entry(2, 1, CONFIG)  # the config our log holds before the writes below
OURS = View.of(config_entry(4, 1, CONFIG.with_isr(frozenset({1, 2}))))  # our view: epoch 4
NEW = config_entry(5, 2, CONFIG.with_isr(frozenset({1, 3})))


def held_config(up_to: int) -> Entry | None:
    return OLD if up_to >= OLD.index else None


@pytest.mark.parametrize(
    ("view", "cut", "written", "expected"),
    [
        (OURS, None, entries(5, [2]), OURS),  # no config written, nothing cut: unchanged
        (OURS, None, (NEW,), View.of(NEW)),  # a config takes effect when written
        (OURS, 5, entries(5, [2]), OURS),  # a cut after our view's entry: unchanged
        (OURS, 4, entries(4, [2]), View.of(OLD)),  # our view's entry cut: the one before it
        (OURS, 2, entries(2, [2]), None),  # every config cut: no view
        (OURS, 4, (*entries(4, [2]), NEW), View.of(NEW)),  # cut, and a new config written
        (None, None, entries(1, [1]), None),  # no view, no config: still none
    ],
)
def test_view_after_write(
    view: View | None, cut: int | None, written: tuple[Entry, ...], expected: View | None
) -> None:
    assert view_after_write(view, cut, written, held_config) == expected
