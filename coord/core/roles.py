"""The roles a node plays (Raft's three), and the node's state its roles' code shares."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import random

    from coord.core.config import View
    from coord.core.election import Ballot
    from coord.core.lease import FollowerLease
    from coord.core.log import RaftLog
    from coord.core.outputs import Outputs
    from coord.core.settings import Settings
    from coord.core.tracker import Tracker


class Role(enum.StrEnum):
    """``REMOVED`` is never :attr:`Node.role`, only what status reports for a follower
    whose view does not include it (:attr:`Node.removed`)."""

    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    LEADER = "leader"
    REMOVED = "removed"


class NodeFields:
    """The state of a :class:`~coord.core.node.Node` that its leader's side
    (:class:`~coord.core.leading.Leading`), its elections' side
    (:class:`~coord.core.voting.Voting`) and its follower's side
    (:class:`~coord.core.following.Following`) work on, declared once:
    ``Node.__init__`` sets it, and the role changes the sides make
    (``_become_follower``, ``_become_leader``, ``_follow``, ``_set_leader``) are
    the node's."""

    id: int
    term: int
    commit: int
    restarted: bool
    leader_id: int
    role: Role
    view: View | None
    log: RaftLog
    settings: Settings
    voted_for: int
    _tracker: Tracker
    _outputs: Outputs
    _lease: FollowerLease
    _ballot: Ballot | None
    _heard_ms: dict[int, int]
    _now_ms: int
    _election_at: int | None
    _term_start: int
    _term_started_ms: int
    _last_broadcast_ms: int
    _transfer_to: int
    _transfer_deadline_ms: int
    _rng: random.Random
    _term_leader: int
    _yielded_to: set[int]
    _lost_ballots: int
    _fence: int
    _restart_clear_epoch: int | None
