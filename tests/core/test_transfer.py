"""Leadership transfer's decisions as tables (coord/core/transfer.py)."""

from __future__ import annotations

import pytest

from coord.core.messages import TimeoutNow
from coord.core.transfer import may_transfer_to, obeys_timeout_now, target_caught_up

LEADER = 1


@pytest.mark.parametrize(
    ("target", "isr", "expected"),
    [
        (2, {1, 2, 3}, True),  # an in-sync follower
        (3, {1, 2}, False),  # outside the ISR: it may lack committed entries
        (LEADER, {1, 2}, False),  # not to itself
        (4, {1, 2, 3}, False),  # not a member at all
    ],
)
def test_may_transfer_to(target: int, isr: set[int], expected: bool) -> None:
    assert may_transfer_to(target, LEADER, isr) is expected


@pytest.mark.parametrize(
    ("match", "last_index", "expected"),
    [
        (7, 7, True),  # holds our whole log
        (6, 7, False),  # not yet: wait for its next ack
        (None, 7, False),  # not tracked (no transfer, or it left)
    ],
)
def test_target_caught_up(match: int | None, last_index: int, expected: bool) -> None:
    assert target_caught_up(match, last_index) is expected


@pytest.mark.parametrize(
    ("msg", "term", "leader_id", "may_campaign", "expected"),
    [
        (TimeoutNow(5, 1), 5, 1, True, True),  # our leader hands over
        (TimeoutNow(4, 1), 5, 1, True, False),  # of an earlier term
        (TimeoutNow(5, 2), 5, 1, True, False),  # not from the leader we follow
        (TimeoutNow(5, 1), 5, 1, False, False),  # we may not lead (removed, or no view)
    ],
)
def test_obeys_timeout_now(
    msg: TimeoutNow, term: int, leader_id: int, may_campaign: bool, expected: bool
) -> None:
    assert obeys_timeout_now(msg, term, leader_id, may_campaign=may_campaign) is expected
