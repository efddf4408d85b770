"""A node's whole internal state as one frozen value, for tests and debugging.

:meth:`coord.core.node.Node.inspect` returns a :class:`NodeState`: everything
an input can change, in comparable form. Tests read a node through it instead
of its private attributes (a refused message must leave it equal; a voter that
yields must have moved its election time), so the node's internals may change
shape without the tests changing meaning. It copies, so it never aliases the
node's mutable bookkeeping.
"""

from __future__ import annotations

from dataclasses import dataclass

from coord.core.config import View
from coord.core.election import Ballot
from coord.core.log import SnapshotMeta
from coord.core.messages import Message, VoteReply
from coord.core.progress import Mode, Progress

__all__ = ["BallotState", "NodeState", "PeerState"]


@dataclass(frozen=True, slots=True)
class PeerState:
    """What a leader tracks of one follower (:class:`coord.core.progress.Progress`)."""

    match: int
    next: int
    mode: Mode
    probe_sent: bool
    inflight: tuple[int, ...]
    acked_sent_at: int | None
    snapshot_ordered: bool

    @classmethod
    def of(cls, p: Progress) -> PeerState:
        return cls(
            p.match,
            p.next,
            p.mode,
            p.probe_sent,
            tuple(p.inflight),
            p.acked_sent_at,
            p.snapshot_ordered,
        )


@dataclass(frozen=True, slots=True)
class BallotState:
    """The round a candidate runs (:class:`coord.core.election.Ballot`)."""

    pre_vote: bool
    term: int
    campaign: int
    replies: tuple[tuple[int, VoteReply], ...]

    @classmethod
    def of(cls, ballot: Ballot | None) -> BallotState | None:
        if ballot is None:
            return None
        replies = tuple(sorted(ballot.replies.items()))
        return cls(ballot.pre_vote, ballot.term, ballot.campaign, replies)


@dataclass(frozen=True, slots=True)
class NodeState:
    """Everything of a node an input can change, besides its log.

    ``term_leader`` is the node whose Append it took in the current term;
    ``lease_leader``/``lease_until_ms`` the promise it made as a follower;
    ``election_at_ms`` when it campaigns next if nothing is heard (None: not
    counting down); ``outbox`` the messages not handed out in a Ready yet;
    ``install`` a snapshot accepted but not yet handed out.
    """

    term: int
    voted_for: int
    role: str
    leader_id: int
    term_leader: int
    commit: int
    restarted: bool
    view: View | None
    peers: tuple[tuple[int, PeerState], ...]
    lease_leader: int
    lease_until_ms: int
    election_at_ms: int | None
    ballot: BallotState | None
    outbox: tuple[tuple[int, Message], ...]
    install: SnapshotMeta | None

    def peer(self, node_id: int) -> PeerState | None:
        """The leader's bookkeeping of ``node_id``, or None if it keeps none."""
        return dict(self.peers).get(node_id)

    @property
    def peer_ids(self) -> frozenset[int]:
        """The followers a leader keeps bookkeeping for (members and leaving members)."""
        return frozenset(peer for peer, _ in self.peers)
