"""The roles a node plays (Raft's three), and what status says of a removed follower."""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    """``REMOVED`` is never :attr:`Node.role`, only what status reports for a follower
    whose view does not include it (:attr:`Node.removed`)."""

    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    LEADER = "leader"
    REMOVED = "removed"
