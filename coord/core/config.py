"""Cluster configuration: members, in-sync set (ISR), ``min_insync``.

A configuration travels as the payload of a ``CONFIG`` log entry, JSON so an
operator can read it with ``sqlite3``::

    {"isr": [1, 2], "members": {"1": "10.0.0.1:7000", "2": "10.0.0.2:7000"},
     "min_insync": 1, "mode": "fail-stop"}

The latest ``CONFIG`` entry in a node's log, committed or not, is that node's
:class:`View`; its index is the *epoch*. Two leaders can write different
configs at one index (one of them uncommitted), so views are ordered like Raft
orders logs: by the entry's term, then its index (:attr:`View.key`).

:class:`AddMember` and :class:`RemoveMember` are the operator's changes, one
member at a time (:meth:`ClusterConfig.follows` is what a follower checks).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from coord.core.entry import Entry, EntryKind
from coord.core.errors import LocalProtocolError, RemoteProtocolError
from coord.core.messages import MAX_INT64


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Who is in the cluster, who is in sync, how many in-sync members writes need, and
    the cluster's mode.

    The mode is chosen once, when the cluster is created (``min_insync > N/2``
    means quorum mode), and every later config keeps it: adding a member to a
    three-node cluster with ``min_insync`` 2 must not turn it into a fail-stop
    cluster because 2 is no longer more than half of four. ``insync_floor`` is
    the ``min_insync`` the operator chose; :attr:`min_insync` is what commits
    need now, which in quorum mode is at least a majority of the current members.
    """

    members: tuple[tuple[int, str], ...]
    isr: frozenset[int]
    insync_floor: int
    quorum: bool

    @classmethod
    def create(
        cls,
        members: Mapping[int, str],
        isr: Iterable[int] | None = None,
        min_insync: int = 1,
        quorum: bool | None = None,
    ) -> ClusterConfig:
        """Build a config; the ISR defaults to every member (a brand-new cluster), the mode
        to what ``min_insync`` selects for these members."""
        in_sync = frozenset(members if isr is None else isr)
        valid_ids = all(0 < i <= MAX_INT64 for i in members)
        if not members or not valid_ids or not in_sync <= members.keys():
            raise LocalProtocolError("members must be positive int64 ids, the ISR a subset of them")
        if not 1 <= min_insync <= len(members):
            raise LocalProtocolError("min_insync must be between 1 and the number of members")
        if quorum is None:
            quorum = 2 * min_insync > len(members)
        return cls(tuple(sorted(members.items())), in_sync, min_insync, quorum)

    @property
    def member_ids(self) -> tuple[int, ...]:
        return tuple(i for i, _ in self.members)

    def address(self, node_id: int) -> str:
        return dict(self.members).get(node_id, "")

    @property
    def quorum_mode(self) -> bool:
        """Elections and commits need a majority of the current members (coord/PROTOCOL.md §4)."""
        return self.quorum

    @property
    def mode(self) -> str:
        return "quorum" if self.quorum else "fail-stop"

    @property
    def majority(self) -> int:
        return len(self.members) // 2 + 1

    @property
    def min_insync(self) -> int:
        """In-sync members a commit needs now: the operator's floor, and in quorum mode at
        least a majority of the current members (so any election majority meets it)."""
        return max(self.insync_floor, self.majority) if self.quorum else self.insync_floor

    def with_isr(self, isr: Iterable[int]) -> ClusterConfig:
        return replace(self, isr=frozenset(isr))

    def with_member(self, node_id: int, address: str) -> ClusterConfig:
        """Add a member outside the ISR: it grows into the ISR once caught up."""
        if node_id <= 0 or node_id in self.member_ids:
            raise LocalProtocolError(f"node {node_id} is already a member or not a valid id")
        members = dict(self.members)
        members[node_id] = address
        return ClusterConfig(
            tuple(sorted(members.items())), self.isr, self.insync_floor, self.quorum
        )

    def without_member(self, node_id: int) -> ClusterConfig:
        if node_id not in self.member_ids:
            raise LocalProtocolError(f"node {node_id} is not a member")
        members = tuple(m for m in self.members if m[0] != node_id)
        after = replace(self, members=members, isr=self.isr - {node_id})
        if len(members) < after.min_insync or len(after.isr) < after.min_insync:
            raise LocalProtocolError(f"removing node {node_id} would leave fewer than min_insync")
        return after

    def follows(self, previous: ClusterConfig) -> bool:
        """Whether a leader may write this config after ``previous``: the same mode and
        ``min_insync`` floor (neither changes by replication), at most one member added or
        removed."""
        changed = set(self.members) ^ set(previous.members)
        same_rules = (self.insync_floor, self.quorum) == (previous.insync_floor, previous.quorum)
        return same_rules and len(changed) <= 1

    def encode(self) -> bytes:
        body = {
            "members": {str(i): addr for i, addr in self.members},
            "isr": sorted(self.isr),
            "min_insync": self.insync_floor,
            "mode": self.mode,
        }
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def decode(cls, payload: bytes) -> ClusterConfig:
        """Read a config entry; one written before the mode was stored gets the mode its
        own ``min_insync`` selects, as it was read then."""
        try:
            body = json.loads(payload)
            members = {int(i): str(addr) for i, addr in body["members"].items()}
            mode = body.get("mode")
            if mode not in (None, "quorum", "fail-stop"):
                raise ValueError(f"unknown mode {mode!r}")
            quorum = None if mode is None else mode == "quorum"
            isr = (int(i) for i in body["isr"])
            return cls.create(members, isr, int(body["min_insync"]), quorum)
        except (
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
            RecursionError,
            LocalProtocolError,
        ) as exc:
            raise RemoteProtocolError(f"malformed config entry: {exc}") from exc


@dataclass(frozen=True, slots=True)
class View:
    """A node's view of the cluster: the latest config entry in its log."""

    epoch: int
    epoch_term: int
    config: ClusterConfig

    @classmethod
    def of(cls, entry: Entry) -> View:
        if entry.kind is not EntryKind.CONFIG:
            raise LocalProtocolError(f"entry {entry.index} is not a config entry")
        return cls(entry.index, entry.term, ClusterConfig.decode(entry.payload))

    @property
    def key(self) -> tuple[int, int]:
        """Order of views: the later leader's config wins, as in Raft's log order."""
        return (self.epoch_term, self.epoch)


def config_entry(index: int, term: int, config: ClusterConfig) -> Entry:
    return Entry(index, term, EntryKind.CONFIG, config.encode())


@dataclass(frozen=True, slots=True)
class AddMember:
    """An operator's change: add ``node_id``, reachable at ``address`` (outside the ISR)."""

    node_id: int
    address: str


@dataclass(frozen=True, slots=True)
class RemoveMember:
    """An operator's change: remove ``node_id`` (never the leader itself)."""

    node_id: int


ConfigChange = AddMember | RemoveMember
