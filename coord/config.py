"""Cluster configuration: members, in-sync set (ISR), ``min_insync``.

A configuration travels as the payload of a ``CONFIG`` log entry, JSON so an
operator can read it with ``sqlite3``::

    {"members": {"1": "10.0.0.1:7000", "2": "10.0.0.2:7000"}, "isr": [1, 2], "min_insync": 1}

The latest ``CONFIG`` entry in a node's log, committed or not, is that node's
:class:`View`; its index is the *epoch*. Two leaders can write different
configs at one index (one of them uncommitted), so views are ordered like Raft
orders logs: by the entry's term, then its index (:attr:`View.key`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from coord.boundary import Entry, EntryKind
from coord.errors import LocalProtocolError, RemoteProtocolError
from coord.messages import MAX_INT64


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Who is in the cluster, who is in sync, and how many in-sync members writes need."""

    members: tuple[tuple[int, str], ...]
    isr: frozenset[int]
    min_insync: int

    @classmethod
    def create(
        cls, members: Mapping[int, str], isr: Iterable[int] | None = None, min_insync: int = 1
    ) -> ClusterConfig:
        """Build a config; the ISR defaults to every member (a brand-new cluster)."""
        in_sync = frozenset(members if isr is None else isr)
        valid_ids = all(0 < i <= MAX_INT64 for i in members)
        if not members or not valid_ids or not in_sync <= members.keys():
            raise LocalProtocolError("members must be positive int64 ids, the ISR a subset of them")
        if not 1 <= min_insync <= len(members):
            raise LocalProtocolError("min_insync must be between 1 and the number of members")
        return cls(tuple(sorted(members.items())), in_sync, min_insync)

    @property
    def member_ids(self) -> tuple[int, ...]:
        return tuple(i for i, _ in self.members)

    def address(self, node_id: int) -> str:
        return dict(self.members).get(node_id, "")

    @property
    def quorum_mode(self) -> bool:
        """``min_insync > N/2``: elections need a majority (DESIGN.md section 3)."""
        return 2 * self.min_insync > len(self.members)

    @property
    def majority(self) -> int:
        return len(self.members) // 2 + 1

    def with_isr(self, isr: Iterable[int]) -> ClusterConfig:
        return ClusterConfig(self.members, frozenset(isr), self.min_insync)

    def with_member(self, node_id: int, address: str) -> ClusterConfig:
        """Add a member outside the ISR: it grows into the ISR once caught up."""
        if node_id <= 0 or node_id in self.member_ids:
            raise LocalProtocolError(f"node {node_id} is already a member or not a valid id")
        members = dict(self.members)
        members[node_id] = address
        return ClusterConfig(tuple(sorted(members.items())), self.isr, self.min_insync)

    def without_member(self, node_id: int) -> ClusterConfig:
        if node_id not in self.member_ids:
            raise LocalProtocolError(f"node {node_id} is not a member")
        members = tuple(m for m in self.members if m[0] != node_id)
        if len(members) < self.min_insync or len(self.isr - {node_id}) < self.min_insync:
            raise LocalProtocolError(f"removing node {node_id} would leave fewer than min_insync")
        return ClusterConfig(members, self.isr - {node_id}, self.min_insync)

    def follows(self, previous: ClusterConfig) -> bool:
        """Whether a leader may write this config after ``previous``: same ``min_insync``
        (the mode never changes by replication), at most one member added or removed."""
        changed = set(self.members) ^ set(previous.members)
        return self.min_insync == previous.min_insync and len(changed) <= 1

    def encode(self) -> bytes:
        body = {
            "members": {str(i): addr for i, addr in self.members},
            "isr": sorted(self.isr),
            "min_insync": self.min_insync,
        }
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def decode(cls, payload: bytes) -> ClusterConfig:
        try:
            body = json.loads(payload)
            members = {int(i): str(addr) for i, addr in body["members"].items()}
            return cls.create(members, (int(i) for i in body["isr"]), int(body["min_insync"]))
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
