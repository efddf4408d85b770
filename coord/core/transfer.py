"""Leadership transfer (coord/PROTOCOL.md §11), as pure functions.

The leader hands over to an in-sync follower once it holds the leader's whole
log, by sending it ``TimeoutNow``; the follower obeys only its own term's
leader. The :class:`~coord.core.node.Node` holds the transfer's state (target,
deadline) and carries out these decisions (``tests/core/test_transfer.py``
holds their tables).
"""

from __future__ import annotations

from collections.abc import Collection

from coord.core.messages import TimeoutNow

__all__ = ["may_transfer_to", "obeys_timeout_now", "target_caught_up"]


def may_transfer_to(target: int, leader: int, isr: Collection[int]) -> bool:
    """Only an in-sync follower may be handed leadership: it holds everything committed."""
    return target != leader and target in isr


def target_caught_up(target_match: int | None, last_index: int) -> bool:
    """Whether ``TimeoutNow`` may go: the target (its ``match``; None if we track none)
    holds our whole log, so it is at least as up to date as any voter."""
    return target_match is not None and target_match >= last_index


def obeys_timeout_now(msg: TimeoutNow, term: int, leader_id: int, *, may_campaign: bool) -> bool:
    """Whether a follower campaigns at once on ``msg``: it comes from the leader it
    follows, in its current term, and the follower may lead at all (a view, not removed)."""
    return msg.term == term and msg.sender == leader_id and may_campaign
