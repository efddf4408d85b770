"""gRPC servicers of the peer and admin APIs: thin adapters onto the coordinator shell."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Protocol

import grpc

from coord.core import errors as core_errors
from coord.core.config import AddMember, ConfigChange, RemoveMember
from coord.shell import snapshots
from coord.shell.auth import Denied, authenticated_peer
from coord.shell.saves import SaveBusy
from proto import replication_pb2 as rpb
from proto import replication_pb2_grpc
from proto.addresses import MemberAddress, peer_address


class PeerEndpoint(Protocol):
    """What the peer service needs of its node: the log streams and snapshot staging."""

    def serve_stream(
        self, requests: AsyncIterator[rpb.PeerBatch], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rpb.PeerBatch]: ...

    async def serve_deliver(
        self, batch: rpb.PeerBatch, context: grpc.aio.ServicerContext
    ) -> None: ...

    async def receive_snapshot(
        self, chunks: AsyncIterator[rpb.SnapshotChunk], peer: int
    ) -> None: ...


class OperatorVerbs(Protocol):
    """What the admin service needs of its node: the operator verbs and a leader hint."""

    id: int

    def change_members(self, change: ConfigChange) -> int: ...

    def transfer_leadership(self, target: int) -> None: ...

    def force_leader(self) -> None: ...

    def save_snapshot(self) -> AsyncGenerator[rpb.SnapshotChunk, None]: ...

    def leader_address(self) -> str: ...


class ReplicationService(replication_pb2_grpc.ReplicationServicer):
    def __init__(self, coordinator: PeerEndpoint) -> None:
        self._coord = coordinator

    async def Stream(
        self, request_iterator: AsyncIterator[rpb.PeerBatch], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rpb.PeerBatch]:
        # An async generator function, so grpc.aio serves it as one.
        async for batch in self._coord.serve_stream(request_iterator, context):
            yield batch

    async def Deliver(
        self, request: rpb.PeerBatch, context: grpc.aio.ServicerContext
    ) -> rpb.Delivered:
        await self._coord.serve_deliver(request, context)
        return rpb.Delivered()

    async def InstallSnapshot(
        self, request_iterator: AsyncIterator[rpb.SnapshotChunk], context: grpc.aio.ServicerContext
    ) -> rpb.SnapshotAck:
        try:
            await self._coord.receive_snapshot(request_iterator, authenticated_peer())
        except Denied as exc:
            await context.abort(exc.code, str(exc))
        except snapshots.SnapshotRefused as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return rpb.SnapshotAck(staged=True)


class AdminService(replication_pb2_grpc.AdminServicer):
    """Operator verbs; errors come back as one-line statuses for chatctl to print."""

    def __init__(self, coordinator: OperatorVerbs) -> None:
        self._coord = coordinator

    async def AddMember(
        self, request: rpb.AddMemberRequest, context: grpc.aio.ServicerContext
    ) -> rpb.AdminReply:
        try:
            address = str(MemberAddress.parse(request.address))
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        index = await self._guard(
            context, lambda: self._coord.change_members(AddMember(request.id, address))
        )
        return rpb.AdminReply(message=f"member {request.id} added at index {index}", index=index)

    async def RemoveMember(
        self, request: rpb.RemoveMemberRequest, context: grpc.aio.ServicerContext
    ) -> rpb.AdminReply:
        index = await self._guard(
            context, lambda: self._coord.change_members(RemoveMember(request.id))
        )
        return rpb.AdminReply(message=f"member {request.id} removed at index {index}", index=index)

    async def TransferLeader(
        self, request: rpb.TransferLeaderRequest, context: grpc.aio.ServicerContext
    ) -> rpb.AdminReply:
        await self._guard(context, lambda: self._coord.transfer_leadership(request.id))
        return rpb.AdminReply(message=f"leadership is moving to node {request.id}")

    async def ForceLeader(
        self, request: rpb.ForceLeaderRequest, context: grpc.aio.ServicerContext
    ) -> rpb.AdminReply:
        if not request.accept_data_loss:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "force-leader may lose acknowledged writes; repeat with --accept-data-loss",
            )
        await self._guard(context, self._coord.force_leader)
        return rpb.AdminReply(message=f"node {self._coord.id} now leads with an ISR of itself")

    async def SaveSnapshot(
        self, request: rpb.SaveSnapshotRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rpb.SnapshotChunk]:
        # Closed explicitly, so a stream the operator drops frees the node's one save at once.
        try:
            async with contextlib.aclosing(self._coord.save_snapshot()) as chunks:
                async for chunk in chunks:
                    yield chunk
        except core_errors.Redirect as exc:
            await self._redirect(context, exc)
        except SaveBusy as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except (OSError, core_errors.CoordError) as exc:
            await context.abort(grpc.StatusCode.INTERNAL, f"cannot capture the state: {exc}")

    async def _redirect(self, context: grpc.aio.ServicerContext, exc: core_errors.Redirect) -> None:
        address = peer_address(self._coord.leader_address())
        trailing = (("leader-address", address),) if address else ()
        await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc), trailing_metadata=trailing)

    async def _guard(self, context: grpc.aio.ServicerContext, action):  # type: ignore[no-untyped-def]
        try:
            return action()
        except core_errors.Redirect as exc:
            await self._redirect(context, exc)
        except core_errors.ChangeInFlight as exc:  # retryable: operators' tools try again
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except core_errors.LocalProtocolError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
