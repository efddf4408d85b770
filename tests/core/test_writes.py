"""When a pending write counts as a stall, as a table (coord/core/writes.py)."""

from __future__ import annotations

import pytest

from coord.core.writes import PendingWrites

STALL = 50


@pytest.mark.parametrize(
    ("writes", "now", "expected"),
    [
        ([], 1000, False),  # nothing pending
        ([(0, 5)], 50, False),  # handed at 0: late only after stall_ms
        ([(0, 5)], 51, True),
        ([(0, None)], 51, True),  # hard state only: as late as entries
        ([(40, 5), (0, 6)], 60, False),  # only the oldest pending write counts
    ],
)
def test_late(writes: list[tuple[int, int | None]], now: int, expected: bool) -> None:
    pending = PendingWrites(STALL)
    for handed, last in writes:
        pending.track(pending.next_seq(), handed, last)
    assert pending.late(now) is expected


def test_a_stall_still_running_counts_once_and_a_later_write_counts_again() -> None:
    pending = PendingWrites(STALL)
    pending.track(pending.next_seq(), 0, 5)
    assert pending.late(60) and not pending.late(70)  # the same stall
    assert pending.durable(1) == 0 and not pending.late(200)
    pending.track(pending.next_seq(), 200, 6)
    assert pending.late(251)


@pytest.mark.parametrize(
    ("lasts", "index", "expected"),
    [([5, None, 8], 7, 1), ([5, None, 8], 8, 3), ([5], 4, None), ([None], 9, None)],
)
def test_through_index(lasts: list[int | None], index: int, expected: int | None) -> None:
    pending = PendingWrites(STALL)
    for last in lasts:
        pending.track(pending.next_seq(), 0, last)
    assert pending.through_index(index) == expected
