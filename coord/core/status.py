"""A node's view of the cluster, as operators and clients see it (``ClusterStatus``,
docs/api.md, "Cluster status"): one value from the core up to the wire.

:meth:`coord.core.node.Node.status` fills every field it can know, addresses
included (its view's config has them); the shell adds only what it alone
knows, the disk fault, with :func:`dataclasses.replace`. ``coord.boundary``
exposes this very type, and the chat service maps it to protobuf in one
function, so a field is named once on its way from the core to ``chatctl``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from coord.core.progress import Progress

__all__ = ["MemberStatus", "Status", "member_status"]


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """One member as this node sees it: ``role`` is ``leader`` for the leader it knows,
    its own role for itself, else ``follower``; ``match_index`` the last index the leader
    knows it holds (its own last index for itself, 0 when it does not lead)."""

    id: int
    address: str
    role: str
    in_sync: bool
    match_index: int
    reachable: bool
    clock_offset_ms: int | None = None  # the shell's to say (coord/shell/clock_offsets.py)


@dataclass(frozen=True, slots=True)
class Status:
    """A snapshot of this node's view of the cluster (``GetClusterStatus``).

    ``mode`` is the cluster's (``fail-stop`` or ``quorum``, fixed when it was
    created; empty without a view); ``fault`` why this node cannot write to
    its disk now, empty when it can (the shell's to say).
    """

    node_id: int
    role: str
    term: int
    leader_id: int
    leader_address: str
    commit_index: int
    members: tuple[MemberStatus, ...]
    config_epoch: int
    min_insync: int
    mode: str
    fault: str = ""


def member_status(
    member_id: int,
    address: str,
    *,
    own_id: int,
    own_role: str,
    own_last_index: int,
    leader_id: int,
    isr: Collection[int],
    progress: Progress | None,
    now_ms: int,
    lease_ms: int,
) -> MemberStatus:
    """One member as this node can tell: itself, a follower it leads, or anyone else.

    A leader knows each follower's match index, and calls it reachable if it
    answered within a lease and its connection was not refused. A node that
    does not lead knows only itself and the leader it follows (reachable: it
    hears from it), and nothing of the others' logs (match 0).
    """
    if member_id == own_id:
        role, match, reachable = own_role, own_last_index, True
    else:
        role = "leader" if member_id == leader_id else "follower"
        if progress is not None:
            heard = progress.last_heard_ms
            recent = heard is not None and now_ms - heard < lease_ms
            match, reachable = progress.match, recent and not progress.refused
        else:
            match, reachable = 0, member_id == leader_id
    return MemberStatus(member_id, address, role, member_id in isr, match, reachable)
