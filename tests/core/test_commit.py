"""The commit rule and ISR shrink/grow as tables: inputs -> output (coord/core/commit.py)."""

from __future__ import annotations

import pytest

from coord.core import commit


@pytest.mark.parametrize(
    ("matches", "required", "isr_size", "min_insync", "expected"),
    [
        ({1: 5}, [1], 1, 1, 5),  # a cluster of one commits what it fsynced
        ({1: 5, 2: 3, 3: 4}, [1, 2, 3], 3, 1, 3),  # the whole ISR holds 3
        ({1: 5, 2: 3, 3: 4}, [1, 3], 2, 1, 4),  # 2 is out of the ISR: not waited for
        ({1: 3, 2: 5, 3: 5}, [1, 2, 3], 3, 1, 3),  # the leader's own fsync counts too
        ({1: 5, 2: 5, 3: 1}, [1, 2, 3], 2, 1, 1),  # a leaving member (3) must hold it
        ({1: 5, 2: 5}, [1, 2], 2, 3, None),  # ISR below min_insync: nothing commits
        ({1: 5, 2: 5, 3: 0}, [1, 2], 2, 2, 5),  # exactly min_insync: commits
    ],
)
def test_commit_candidate(
    matches: dict[int, int], required: list[int], isr_size: int, min_insync: int, expected: int
) -> None:
    assert commit.commit_candidate(matches, required, isr_size, min_insync) == expected


@pytest.mark.parametrize(
    ("candidate", "current", "candidate_term", "term", "expected"),
    [
        (None, 0, None, 1, False),  # ISR too small
        (5, 3, 2, 2, True),  # higher and of our term
        (5, 5, 2, 2, False),  # not higher
        (3, 5, 2, 2, False),  # lower (a lagging ISR member)
        (5, 3, 1, 2, False),  # an earlier term's entry: never by counting (figure 8)
    ],
)
def test_may_commit(
    candidate: int | None, current: int, candidate_term: int | None, term: int, expected: bool
) -> None:
    assert commit.may_commit(candidate, current, candidate_term, term) is expected


@pytest.mark.parametrize(
    ("isr", "written", "tracked", "expected"),
    [
        ({1, 2, 3}, [], {1, 2, 3}, {1, 2, 3}),  # the view is durable: its ISR
        ({1, 2}, [{1, 2, 3}], {1, 2, 3}, {1, 2, 3}),  # a shrink not durable yet: 3 still acks
        ({1, 2, 3}, [{1, 2}, {1, 2, 3}], {1, 2, 3}, {1, 2, 3}),  # grown back: all of them
        ({1, 2}, [{1, 2, 3}], {1, 2}, {1, 2}),  # 3 is tracked no more (removed, forgotten)
    ],
)
def test_relied_isr(
    isr: set[int], written: list[set[int]], tracked: set[int], expected: set[int]
) -> None:
    assert commit.relied_isr(isr, written, tracked) == frozenset(expected)


@pytest.mark.parametrize(
    ("isr", "peer", "min_insync", "expected"),
    [
        ({1, 2, 3}, 3, 1, {1, 2}),  # a silent member leaves the ISR
        ({1, 2, 3}, 3, 3, None),  # not below min_insync: writes wait instead
        ({1, 2}, 3, 1, None),  # not in the ISR: nothing changes
        ({1, 2}, 2, 1, {1}),  # down to the leader alone
    ],
)
def test_isr_after_silence(isr: set[int], peer: int, min_insync: int, expected: set[int]) -> None:
    result = commit.isr_after_silence(frozenset(isr), peer, min_insync)
    assert result == (None if expected is None else frozenset(expected))


@pytest.mark.parametrize(
    ("members", "isr", "peer", "match", "current", "expected"),
    [
        ({1, 2, 3}, {1, 2}, 3, 7, 7, {1, 2, 3}),  # holds everything committed: rejoins
        ({1, 2, 3}, {1, 2}, 3, 9, 7, {1, 2, 3}),  # holds more: rejoins
        ({1, 2, 3}, {1, 2}, 3, 6, 7, None),  # still behind the commit index
        ({1, 2, 3}, {1, 2, 3}, 3, 7, 7, None),  # in already
        ({1, 2}, {1, 2}, 3, 7, 7, None),  # leaving: never rejoins
    ],
)
def test_isr_after_catch_up(
    members: set[int], isr: set[int], peer: int, match: int, current: int, expected: set[int]
) -> None:
    result = commit.isr_after_catch_up(members, frozenset(isr), peer, match, current)
    assert result == (None if expected is None else frozenset(expected))


@pytest.mark.parametrize(
    ("epoch", "current", "expected"),
    [(5, 4, False), (5, 5, True), (5, 9, True)],
)
def test_departed_forgotten(epoch: int, current: int, expected: bool) -> None:
    assert commit.departed_forgotten(epoch, current) is expected
