"""The commit rule and the ISR's shrink and grow (coord/PROTOCOL.md §5, §6), as pure functions.

An entry commits once every member of the ISR holds it durably, and every
member being removed too (so that a removed member learns it was removed),
provided the ISR has at least ``min_insync`` members; only an entry of the
leader's own term commits by counting, earlier ones ride along (Raft's
figure 8). The ISR shrinks when a member stops answering, never below
``min_insync`` (writes then wait rather than commit on too few copies), and
grows back when a member that is outside it holds everything committed.

These functions see only plain values, so each rule reads and tests apart from
the :class:`~coord.core.node.Node` that feeds them (``tests/core/test_commit.py``
holds their tables).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

__all__ = [
    "commit_candidate",
    "departed_forgotten",
    "isr_after_catch_up",
    "isr_after_silence",
    "may_commit",
    "relied_isr",
]


def commit_candidate(
    matches: Mapping[int, int],
    required: Collection[int],
    isr_size: int,
    min_insync: int,
) -> int | None:
    """The highest index every ``required`` node holds, if the ISR is big enough to commit.

    ``matches`` maps each node to the last index it holds durably (the leader's
    own entry is what it has fsynced); ``required`` are the ISR members the
    leader relies on (:func:`relied_isr`) and the members being removed.
    """
    if isr_size < min_insync:
        return None
    return min(matches[node] for node in required)


def may_commit(candidate: int | None, commit: int, candidate_term: int | None, term: int) -> bool:
    """Whether the commit index moves to ``candidate``: it is higher and of our own term.

    An entry of an earlier term is never committed by counting copies: a later
    leader could still overwrite it (Raft, figure 8). It commits with the first
    entry of our term after it.
    """
    return candidate is not None and candidate > commit and candidate_term == term


def relied_isr(
    isr: Collection[int], written_isrs: Iterable[Collection[int]], tracked: Collection[int]
) -> frozenset[int]:
    """The ISR the leader may count on for commits and its lease.

    An ISR change counts only once it is durable on the leader: until then the
    members of the last durable ISR, and of every ISR written since
    (``written_isrs``, empty when the current config is durable), must ack
    too. A shrink decided while the leader's own writes were stuck (heartbeats
    "sent" but held back, so the followers' silence was its own) is thus never
    relied on: the slow write reveals the stall, and the leader steps down,
    before the shrink is durable. Only ``tracked`` nodes (the leader and the
    peers it keeps progress for) can be counted.
    """
    required = set(isr)
    for written in written_isrs:
        required |= set(written)
    return frozenset(required & set(tracked))


def isr_after_silence(isr: frozenset[int], peer: int, min_insync: int) -> frozenset[int] | None:
    """The ISR without ``peer``, which stopped answering; None when it stays as it is.

    It stays when ``peer`` is not in it, or when dropping it would leave fewer
    than ``min_insync`` members: writes then wait instead of committing on too
    few copies.
    """
    if peer in isr and len(isr) - 1 >= min_insync:
        return isr - {peer}
    return None


def isr_after_catch_up(
    members: Collection[int], isr: frozenset[int], peer: int, match: int, commit: int
) -> frozenset[int] | None:
    """The ISR with ``peer``, a member outside it that holds everything committed; else None.

    A node that is no member (being removed) never rejoins, and one already in
    the ISR changes nothing.
    """
    if peer not in members or peer in isr or match < commit:
        return None
    return isr | {peer}


def departed_forgotten(epoch: int, commit: int) -> bool:
    """Whether the leader may stop tracking removed members: the config of ``epoch``
    that removed them is committed, so they hold it and nothing more is owed."""
    return epoch <= commit
