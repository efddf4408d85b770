"""The sans-IO protocol core: one :class:`Node` per replica, driven by method calls.

No sockets, disks or clocks: the shell (:mod:`coord.shell`) feeds the node its
inputs with the time, and carries out each :class:`Ready` it hands back (see
:mod:`coord.core.ready` for the order). Importable without grpc. The rules the
node applies live in small pure modules, each readable and tested apart:
:mod:`~coord.core.election` (the vote decision), :mod:`~coord.core.commit`
(the commit rule, ISR shrink and grow), :mod:`~coord.core.lease`,
:mod:`~coord.core.progress` (flow control), :mod:`~coord.core.append` (a
follower's Append and snapshot), :mod:`~coord.core.transfer` (leadership
transfer), :mod:`~coord.core.config` (membership), :mod:`~coord.core.checks`
(what no correct peer sends), :mod:`~coord.core.writes` (when a write is a
stall) and :mod:`~coord.core.status` (what it reports); :mod:`~coord.core.outputs`
accumulates what the next :class:`Ready` holds.
:meth:`Node.inspect` shows its whole state to tests, :meth:`Node.campaign`
starts an election on demand.
"""

from coord.core.config import AddMember, ClusterConfig, ConfigChange, RemoveMember, View
from coord.core.election import Decision
from coord.core.entry import Entry, EntryKind
from coord.core.errors import CoordError, LocalProtocolError, Redirect, RemoteProtocolError
from coord.core.inspection import BallotState, NodeState, PeerState
from coord.core.log import NO_NODE, HardState, MemoryStorage, SnapshotMeta, Storage
from coord.core.messages import (
    Append,
    AppendReply,
    InstallSnapshot,
    Message,
    TimeoutNow,
    VoteReply,
    VoteRequest,
)
from coord.core.node import Node, Role
from coord.core.ready import ElectionResult, Ready, SnapshotOrder, SoftState
from coord.core.settings import Settings
from coord.core.status import MemberStatus, Status

__all__ = [
    "NO_NODE",
    "AddMember",
    "Append",
    "AppendReply",
    "BallotState",
    "ClusterConfig",
    "ConfigChange",
    "CoordError",
    "Decision",
    "ElectionResult",
    "Entry",
    "EntryKind",
    "HardState",
    "InstallSnapshot",
    "LocalProtocolError",
    "MemberStatus",
    "MemoryStorage",
    "Message",
    "Node",
    "NodeState",
    "PeerState",
    "Ready",
    "Redirect",
    "RemoteProtocolError",
    "RemoveMember",
    "Role",
    "Settings",
    "SnapshotMeta",
    "SnapshotOrder",
    "SoftState",
    "Status",
    "Storage",
    "TimeoutNow",
    "View",
    "VoteReply",
    "VoteRequest",
]
