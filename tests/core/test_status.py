"""What a node reports of each member, as a table (coord/core/status.py)."""

from __future__ import annotations

import pytest

from coord.core.progress import Progress
from coord.core.status import MemberStatus, member_status

LEASE = 200


def progress(match: int, heard_ms: int | None, *, refused: bool = False) -> Progress:
    p = Progress(match + 1, 0)
    p.match, p.last_heard_ms, p.refused = match, heard_ms, refused
    return p


@pytest.mark.parametrize(
    ("member", "leader", "tracked", "expected"),
    [
        (1, 1, None, MemberStatus(1, "a", "leader", True, 9, True)),  # itself, leading
        (2, 1, progress(7, 950), MemberStatus(2, "a", "follower", True, 7, True)),
        (2, 1, progress(7, 800), MemberStatus(2, "a", "follower", True, 7, False)),  # a lease
        (2, 1, progress(7, 990, refused=True), MemberStatus(2, "a", "follower", True, 7, False)),
        (3, 1, None, MemberStatus(3, "a", "follower", False, 0, False)),  # outside the ISR
        (3, 3, None, MemberStatus(3, "a", "leader", False, 0, True)),  # the leader it follows
    ],
)
def test_member_status(
    member: int, leader: int, tracked: Progress | None, expected: MemberStatus
) -> None:
    got = member_status(
        member,
        "a",
        own_id=1,
        own_role="leader" if leader == 1 else "follower",
        own_last_index=9,
        leader_id=leader,
        isr={1, 2},
        progress=tracked,
        now_ms=1000,
        lease_ms=LEASE,
    )
    assert got == expected
