"""One node's view of the cluster, as every client program reads it.

The library's ``cluster_status``, the leader finder and ``chatctl``'s member
table all take ``GetClusterStatus`` answers as these values, so the chat app's
``/status`` and ``chatctl status`` render from one type, and no caller reads a
protobuf (whose unset optional field reads as 0) directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from proto import chat_pb2 as pb

__all__ = ["ClusterStatus", "Member", "cluster_status"]


@dataclass(frozen=True, slots=True)
class Member:
    """A member as the answering node sees it; match and clock are the leader's to know."""

    id: int
    address: str
    role: str
    in_sync: bool
    match_index: int
    reachable: bool
    clock_offset_ms: int | None  # None where unknown, or when the answering node does not lead


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    """One node's answer: itself, whom it follows, and the members (docs/api.md)."""

    node_id: int
    role: str
    term: int
    leader_id: int
    leader_address: str
    commit_index: int
    applied_index: int
    members: tuple[Member, ...]
    config_epoch: int
    min_insync: int
    mode: str
    fault: str  # '' when the node can write to its disk
    version: str


def cluster_status(reply: pb.ClusterStatus) -> ClusterStatus:
    """The value of a GetClusterStatus reply."""
    return ClusterStatus(
        node_id=reply.node_id,
        role=reply.role,
        term=reply.term,
        leader_id=reply.leader_id,
        leader_address=reply.leader_address,
        commit_index=reply.commit_index,
        applied_index=reply.applied_index,
        members=tuple(_member(m) for m in reply.members),
        config_epoch=reply.config_epoch,
        min_insync=reply.min_insync,
        mode=reply.mode,
        fault=reply.fault,
        version=reply.version,
    )


def _member(member: pb.Member) -> Member:
    clock = member.clock_offset_ms if member.HasField("clock_offset_ms") else None
    return Member(
        id=member.id,
        address=member.address,
        role=member.role,
        in_sync=member.in_sync,
        match_index=member.match_index,
        reachable=member.reachable,
        clock_offset_ms=clock,
    )
