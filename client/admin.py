"""The operator's calls on a cluster, as a library: what ``chatctl`` verbs are made of.

Status comes from every member (``GetClusterStatus``); the membership calls
go to the leader, found and followed through ``leader-address`` hints as the
chat library does it (:mod:`client.retry`); ``ForceLeader`` goes to the node that is to
lead, since there may be no leader. Every failure an operator can cause or
fix is an :class:`AdminError` with a one-line message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc

from client import snapshot_file
from client.connect import open_channel, status_call
from client.retry import Budget, RetryPolicy, on_leader
from client.status import ClusterStatus, Member
from proto import replication_pb2 as rpb
from proto import replication_pb2_grpc
from proto.addresses import client_address, peer_address
from proto.credentials import Metadata
from proto.errors import ChatError, Unavailable

__all__ = ["AdminError", "ClusterAdmin", "Row", "Views", "reference_view", "status_rows"]

T = TypeVar("T")
Views = dict[str, ClusterStatus | None]

STATUS_TIMEOUT_S = 1.0
ADMIN_POLICY = RetryPolicy(deadline_s=10.0)  # how long a call looks for a leader that takes it
ADMIN_CALL_TIMEOUT_S = 5.0
SAVE_TIMEOUT_S = 3600.0  # a whole state streamed, at disk and network speed


class AdminError(Exception):
    """An expected failure, told in one line: no leader, a refusal, a node that is not there."""


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the member table: an address, its own answer (when it gave one), and
    what the reference view says of it. None is a value no one told (shown as '-')."""

    address: str
    up: bool
    id: int | None = None
    role: str | None = None
    term: int | None = None
    leader: int | None = None
    commit: int | None = None
    applied: int | None = None
    epoch: int | None = None
    mode: str | None = None
    version: str | None = None
    fault: str | None = None  # why the node cannot write to its disk
    member: bool | None = None  # None when no view tells the membership
    in_sync: bool | None = None
    match: int | None = None
    lag: int | None = None
    clock_ms: int | None = None

    @property
    def node(self) -> str:
        """How a line about this row names it: by id, or by address while unknown."""
        return f"node {self.address if self.id is None else self.id}"

    def as_json(self) -> dict[str, object]:
        """The row as ``chatctl status --json`` prints it: the values told, in field order."""
        return {
            field.name: value
            for field in dataclasses.fields(self)
            if (value := getattr(self, field.name)) is not None
        }


def reference_view(views: Views) -> ClusterStatus | None:
    """The view to trust for membership: the leader's (highest term if a deposed one still
    thinks it leads), else the freshest config any member holds."""
    answers = [v for v in views.values() if v is not None]
    leaders = [v for v in answers if v.role == "leader"]
    if leaders:
        return max(leaders, key=lambda v: v.term)
    return max(answers, key=lambda v: (v.config_epoch, v.term), default=None)


def status_rows(views: Views) -> list[Row]:
    """One row per address: its own answer, plus what the reference view says of it.

    Match index and lag come from the leader only (followers do not track them);
    membership and ISR fall back to the freshest config when no leader answers.
    """
    reference = reference_view(views)
    members = {client_address(m.address): m for m in reference.members} if reference else {}
    leader = reference if reference is not None and reference.role == "leader" else None
    return [
        _row(address, view, members.get(address), reference is not None, leader)
        for address, view in views.items()
    ]


def _row(
    address: str,
    view: ClusterStatus | None,
    member: Member | None,
    membership_known: bool,
    leader: ClusterStatus | None,
) -> Row:
    row = Row(
        address,
        up=view is not None,
        id=None if member is None else member.id,
        member=member is not None if membership_known else None,
        in_sync=None if member is None else member.in_sync,
    )
    if view is not None:
        row = dataclasses.replace(
            row,
            id=view.node_id,
            role=view.role,
            term=view.term,
            leader=view.leader_id,
            commit=view.commit_index,
            applied=view.applied_index,
            epoch=view.config_epoch,
            mode=view.mode,
            version=view.version or "-",
            fault=view.fault or None,
        )
    if member is not None and leader is not None:
        lag = max(0, leader.commit_index - member.match_index)
        row = dataclasses.replace(
            row, match=member.match_index, lag=lag, clock_ms=member.clock_offset_ms
        )
    return row


def health_problems(rows: list[Row]) -> list[str]:
    """Why the cluster is degraded, a phrase each; none when it is healthy: a leader
    answers, and every member answers, is in the leader's ISR and can write to its disk
    (a member that stopped answering stays in the ISR for up to a lease)."""
    if not any(row.up for row in rows):
        return ["no member answered"]
    problems = [] if any(row.role == "leader" for row in rows) else ["no leader"]
    for row in rows:
        if row.member is False:  # an address given that is not a member
            continue
        if not row.up:
            problems.append(f"{row.node} down")
        elif row.in_sync is False:
            problems.append(f"{row.node} not in sync")
        if row.fault is not None:
            problems.append(f"{row.node}: {row.fault}")
    return problems


def _peer_of(view: ClusterStatus, address: str) -> str:
    """Where the member that answered view at (client) address takes Admin calls: its peer
    listener, as its own configuration names it."""
    mine = next((m.address for m in view.members if m.id == view.node_id), "")
    return peer_address(mine) if mine else address


class ClusterAdmin:
    """Operator calls on the cluster at ``addresses``.

    ``ids`` are the members the caller knows by id (from ``--cluster``), for
    calls addressed to one node; ``metadata`` proves the operator's role
    (:meth:`proto.credentials.ClusterSecret.metadata`). Each call opens its
    channels and closes them after, so a node restarted between two calls is
    seen at once.
    """

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        ids: dict[int, str] | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Metadata = (),
    ) -> None:
        self.addresses = list(dict.fromkeys(addresses))
        self.ids = dict(ids or {})
        self.credentials = credentials
        self.metadata = metadata
        self._status = status_call(credentials)
        self._hint = ""  # where the last refusal said the leader is
        self._rng = random.Random()

    # -- status ---------------------------------------------------------------------------

    async def fetch_status(
        self, address: str, wait_s: float = STATUS_TIMEOUT_S
    ) -> ClusterStatus | None:
        """One node's view of the cluster, or None when it does not answer in time."""
        try:
            return await self._status(address, wait_s)
        except grpc.aio.AioRpcError:
            return None

    async def views(self, addresses: Sequence[str]) -> Views:
        answers = await asyncio.gather(*(self.fetch_status(a) for a in addresses))
        return dict(zip(addresses, answers, strict=True))

    async def discover(self) -> Views:
        """Views of the given addresses plus any member they report that was not given, so a
        node added with add-member shows even when the address list predates it."""
        views = await self.views(self.addresses)
        reference = reference_view(views)
        members = [client_address(m.address) for m in reference.members] if reference else []
        extra = [address for address in members if address not in views]
        return views | await self.views(extra) if extra else views

    async def status(self) -> list[Row]:
        """The member table: one row per member that was given or that a member reports."""
        return status_rows(await self.discover())

    # -- membership and leadership ----------------------------------------------------------

    async def add_member(self, node_id: int, address: str) -> str:
        """Add a node (started with ``chatnode --join``); the leader's one-line reply."""
        return await self._on_leader("AddMember", rpb.AddMemberRequest(id=node_id, address=address))

    async def remove_member(self, node_id: int) -> str:
        return await self._on_leader("RemoveMember", rpb.RemoveMemberRequest(id=node_id))

    async def transfer_leader(self, node_id: int) -> str:
        """Ask the leader to hand over to node_id; it does so asynchronously (see await_leader)."""
        return await self._on_leader("TransferLeader", rpb.TransferLeaderRequest(id=node_id))

    async def await_leader(self, node_id: int, timeout_s: float) -> str:
        """Poll until node_id says it leads (a transfer completes asynchronously)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for view in (await self.discover()).values():
                if view is not None and view.node_id == node_id and view.role == "leader":
                    return f"node {node_id} leads (term {view.term})"
            await asyncio.sleep(0.1)
        raise AdminError(f"node {node_id} did not take over within {timeout_s:g}s")

    async def force_leader(self, node_id: int) -> str:
        """Make node_id lead with an in-sync set of itself alone, losing what only the others
        hold. Sent to that node, never to a leader: there may be none."""
        address = await self.address_of(node_id)
        request = rpb.ForceLeaderRequest(accept_data_loss=True)
        try:
            reply = await self._admin_call("ForceLeader", request)(address)
        except grpc.aio.AioRpcError as exc:
            raise AdminError(f"node {node_id} at {address}: {exc.details()}") from None
        return reply.message

    # -- snapshots ------------------------------------------------------------------------

    async def save_snapshot(self, path: Path) -> snapshot_file.SnapshotInfo:
        """Stream the leader's state into a snapshot file at path (snapshot_file's form).

        A try the leader refuses as UNAVAILABLE, or that breaks off, starts
        again on the leader it names; the file appears only once whole.
        """
        with snapshot_file.claimed(path) as partial:
            info = await self._retry_on_leader(lambda address: self._save(address, partial))
            snapshot_file.publish(partial, path)
        return info

    async def _save(self, address: str, partial: Path) -> snapshot_file.SnapshotInfo:
        async with open_channel(address, self.credentials) as channel:
            call = replication_pb2_grpc.AdminStub(channel).SaveSnapshot(
                rpb.SaveSnapshotRequest(), timeout=SAVE_TIMEOUT_S, metadata=self.metadata
            )
            return await snapshot_file.receive(partial, aiter(call))

    async def address_of(self, node_id: int) -> str:
        """Node node_id's peer address: from ``ids`` if it is there, else from the members'
        views."""
        if address := self.ids.get(node_id):
            return peer_address(address)
        for address, view in (await self.discover()).items():
            if view is not None and view.node_id == node_id:
                return _peer_of(view, address)
        raise AdminError(f"node {node_id} is not in --cluster and no member answered for it")

    # -- plumbing -------------------------------------------------------------------------

    def _admin_call(
        self, method: str, request: object
    ) -> Callable[[str], Awaitable[rpb.AdminReply]]:
        async def call(address: str) -> rpb.AdminReply:
            async with open_channel(address, self.credentials) as channel:
                rpc = getattr(replication_pb2_grpc.AdminStub(channel), method)
                return await rpc(request, timeout=ADMIN_CALL_TIMEOUT_S, metadata=self.metadata)

        return call

    async def _on_leader(self, method: str, request: object) -> str:
        """One Admin call on the leader; its one-line reply, or AdminError with the refusal."""
        reply = await self._retry_on_leader(self._admin_call(method, request))
        return reply.message

    async def _retry_on_leader(self, attempt: Callable[[str], Awaitable[T]]) -> T:
        """Run attempt(address) on the leader until it succeeds, and return its result.

        Retried as the chat library retries (client.retry, with ADMIN_POLICY); what
        ends the call becomes an AdminError with its one line.
        """
        budget = Budget.start(ADMIN_POLICY, self._rng)
        try:
            return await on_leader(attempt, budget, self._find, self._lost)
        except Unavailable:  # never a refusal: those are retried until the deadline
            waited = f"{ADMIN_POLICY.deadline_s:g}s"
            raise AdminError(f"no leader answered within {waited} ({budget.last_error})") from None
        except ChatError as exc:
            raise AdminError(str(exc)) from None

    async def _find(self, budget: Budget) -> str:
        """Where an Admin call goes next: where the last refusal pointed, else the peer
        address of a member that says it leads ('' while none does)."""
        hint, self._hint = self._hint, ""
        if hint:
            return hint
        found = await budget.find_leader(self.addresses, self._status, first=True)
        if found is None:
            return ""
        address, status = found
        return _peer_of(status, address)

    def _lost(self, address: str, hint: str) -> None:
        self._hint = hint
