"""Leases: the follower's promise to one leader, and the leader's count of those promises.

A follower that accepts a heartbeat at its local time ``t`` promises that
leader not to vote for anyone else before ``t + lease_ms``. The leader counts
on that promise from the *send* time ``s`` of a heartbeat every required node
acked, shortened by the clock drift: ``s + lease_ms * (1 - max_drift)``. Since
``s`` comes before ``t`` in real time, the leader's lease ends before any of the
promises it counts on, without any clock being compared with another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from coord.core.log import NO_NODE


@dataclass(slots=True)
class FollowerLease:
    """The promise this node made, to ``leader_id`` (``NO_NODE``: to whoever it was).

    A freshly started process keeps a lease on an unknown leader for one
    ``lease_ms``: the promise its previous life may have made died with its
    memory, and a leader may still be counting on it.
    """

    leader_id: int
    until_ms: int

    def live(self, now_ms: int) -> bool:
        return now_ms < self.until_ms

    def grant(self, leader_id: int, now_ms: int, lease_ms: int) -> None:
        self.leader_id = leader_id
        self.until_ms = now_ms + lease_ms

    def void(self) -> None:
        """The leader is gone (refused connection, or it said it is not leader)."""
        self.until_ms = 0

    def blocks(self, candidate: int, transfer_from: int, now_ms: int) -> bool:
        """Whether this lease forbids helping ``candidate`` take over now.

        A lease never blocks its own leader, nor a handover that leader started.
        """
        if not self.live(now_ms):
            return False
        return self.leader_id == NO_NODE or self.leader_id not in (candidate, transfer_from)


def leader_lease_holds(
    now_ms: int,
    isr_acks: Sequence[int | None],
    member_acks: Sequence[int | None],
    members_needed: int,
    leader_lease_ms: int,
) -> bool:
    """Whether the leader still holds its lease.

    ``isr_acks`` are, for each other ISR member, the send time of the latest
    heartbeat it acked (None: none yet this term). In quorum mode a majority's
    promises are needed too (``members_needed`` other members, from
    ``member_acks``), since a majority elects the next leader. With an ISR of
    itself alone and no majority needed, the leader holds it by definition.
    """
    if any(ack is None for ack in isr_acks):
        return False
    basis = [ack for ack in isr_acks if ack is not None]
    if members_needed:
        acked = sorted((ack for ack in member_acks if ack is not None), reverse=True)
        if len(acked) < members_needed:
            return False
        basis.append(acked[members_needed - 1])
    return not basis or now_ms < min(basis) + leader_lease_ms


def quorum_heard(now_ms: int, heard_ms: Sequence[int | None], needed: int, window_ms: int) -> bool:
    """Whether at least ``needed`` of the other members spoke to the leader within the last
    ``window_ms`` (``heard_ms``: when each last did, None: never).

    Check-quorum: in quorum mode a leader that a majority has not heard from within
    a lease cannot commit, and the majority may already have elected another; it
    steps down rather than answer its clients as if it led.
    """
    recent = sum(1 for heard in heard_ms if heard is not None and now_ms - heard < window_ms)
    return recent >= needed
