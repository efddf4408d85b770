"""The client's end of one ``Session`` stream: many calls in flight, replies matched by id.

:class:`client.library.ChatClient` keeps one of these open to the leader and
sends its session calls on it (``--unary`` clients use one unary call each).
A link knows nothing of leaders or retries: when its stream ends, every call
waiting on it fails with the stream's status, as a unary call would, and the
client decides where to re-send it (with the same request_id, so the cluster
acts on it once).

Calls are written in the order they are made and the server answers them in
that order; a link never has more than the server's bound in flight, so it is
never refused for flow control: a caller beyond the bound waits its turn.
When a link breaks, the calls it carried are re-sent on the next one in the
order they were first made (:class:`SendOrder`), so a failover cannot reorder
what the caller pipelined.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from proto import chat_pb2 as pb
from proto import chat_pb2_grpc
from proto.errors import from_call_error
from proto.session_calls import IN_FLIGHT_MAX


def _rpc_error(
    code: grpc.StatusCode, details: str, trailing: grpc.aio.Metadata | None = None
) -> grpc.aio.AioRpcError:
    """A status raised as a failed call would raise it, for what a stream's end means.

    Each waiting call gets its own instance: one exception raised in many places
    would collect every place's traceback."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing or grpc.aio.Metadata(), details)


def _copy(error: grpc.aio.AioRpcError) -> grpc.aio.AioRpcError:
    return _rpc_error(error.code(), error.details() or "", error.trailing_metadata())


class SendOrder:
    """Which calls may be written on a link now: in the order the calls were first made.

    Each call takes a ticket before its first attempt and returns it when it ends.
    Before writing on a link of generation ``g`` (links are numbered as they are
    opened), a call waits until every call with an earlier ticket that is still
    going has been written on a link of generation ``g`` or later. On one link
    that is the order calls are made anyway; after a failover it makes the
    re-sent calls go out as they first did, whichever woke from its back-off first.
    """

    def __init__(self) -> None:
        self._next = 0
        self._written_on: dict[int, int] = {}  # ticket -> generation last written on (-1)
        self._changed = asyncio.Condition()

    def ticket(self) -> int:
        ticket, self._next = self._next, self._next + 1
        self._written_on[ticket] = -1
        return ticket

    async def done(self, ticket: int) -> None:
        async with self._changed:
            self._written_on.pop(ticket, None)
            self._changed.notify_all()

    async def turn(self, ticket: int, generation: int) -> None:
        """Wait until every earlier call still going was written on generation or later."""
        async with self._changed:
            await self._changed.wait_for(
                lambda: all(
                    written >= generation
                    for earlier, written in self._written_on.items()
                    if earlier < ticket
                )
            )

    async def written(self, ticket: int, generation: int) -> None:
        async with self._changed:
            if ticket in self._written_on:
                self._written_on[ticket] = max(self._written_on[ticket], generation)
            self._changed.notify_all()


class SessionLink:
    """One open Session stream to address; ``generation`` numbers it among a client's links."""

    def __init__(
        self,
        stub: chat_pb2_grpc.ChatServiceStub,
        address: str,
        metadata: tuple[tuple[str, str], ...],
        on_leader: Callable[[pb.LeaderInfo], None],
        generation: int = 0,
    ) -> None:
        self.address = address
        self.generation = generation
        self._call = stub.Session(metadata=metadata)
        self._on_leader = on_leader
        self._waiting: dict[str, asyncio.Future[pb.ServerFrame]] = {}
        self._slots = asyncio.Semaphore(IN_FLIGHT_MAX)
        self._writing = asyncio.Lock()  # grpc.aio takes one write at a time per stream
        self._messages: asyncio.Queue[pb.Message | grpc.aio.AioRpcError] = asyncio.Queue()
        self.ended: grpc.aio.AioRpcError | None = None
        self._reader = asyncio.create_task(self._read(), name=f"session-link-{address}")

    async def call(
        self,
        field: str,
        request: Any,
        timeout_s: float,
        written: Callable[[], Awaitable[None]] | None = None,
    ) -> Any:
        """Send request as the frame's `field` call; its reply, or raise: the ChatError of
        an error frame (proto.errors), the stream's AioRpcError when it ended first,
        DEADLINE_EXCEEDED (and the link closed: its node is hung) when no reply came
        within timeout_s. ``written`` is awaited once the frame is on the stream."""
        request_id = getattr(request, "request_id", "") or uuid.uuid4().hex
        async with self._slots:
            self._raise_if_ended()
            reply = asyncio.get_running_loop().create_future()
            self._waiting[request_id] = reply
            try:
                async with self._writing:
                    await self._write(pb.ClientFrame(request_id=request_id, **{field: request}))
                if written is not None:
                    await written()
                async with asyncio.timeout(timeout_s):
                    frame = await reply
            except TimeoutError:
                self.close()
                raise _rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "no reply in time") from None
            finally:
                self._waiting.pop(request_id, None)
                _settle(reply)
        if frame.WhichOneof("event") == "error":
            raise from_call_error(frame.error)
        return getattr(frame, field)

    async def messages(self, after_id: int, timeout_s: float) -> AsyncIterator[pb.Message]:
        """Subscribe on this stream: messages with id > after_id until it ends (then its
        AioRpcError is raised)."""
        await self.call("subscribe", pb.SubscribeRequest(after_id=after_id), timeout_s)
        while not isinstance(item := await self._messages.get(), grpc.aio.AioRpcError):
            yield item
        raise item

    def done(self) -> bool:
        return self.ended is not None

    def cancel(self) -> None:
        """End the stream (a watchdog found its node paused or no longer leading)."""
        self.close()

    def close(self) -> None:
        self._call.cancel()

    # -- inside ---------------------------------------------------------------------

    async def _write(self, frame: pb.ClientFrame) -> None:
        try:
            await self._call.write(frame)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            await asyncio.wait({self._reader})  # the stream ended: report how
            self._raise_if_ended()
            raise

    def _raise_if_ended(self) -> None:
        if self.ended is not None:
            raise _copy(self.ended)

    async def _read(self) -> None:
        try:
            while (frame := await self._call.read()) is not grpc.aio.EOF:
                self._take(frame)
            end = _rpc_error(grpc.StatusCode.UNAVAILABLE, "the node closed the stream")
        except grpc.aio.AioRpcError as exc:
            end = _as_broken(exc)
        except asyncio.CancelledError:
            end = _rpc_error(grpc.StatusCode.CANCELLED, "the stream was closed")
        self.ended = end
        for reply in self._waiting.values():
            if not reply.done():
                reply.set_exception(_copy(end))
        self._messages.put_nowait(_copy(end))

    def _take(self, frame: pb.ServerFrame) -> None:
        if frame.request_id:
            reply = self._waiting.get(frame.request_id)
            if reply is not None and not reply.done():
                reply.set_result(frame)
        elif frame.WhichOneof("event") == "message":
            self._messages.put_nowait(frame.message)
        elif frame.WhichOneof("event") == "leader":
            self._on_leader(frame.leader)


def _settle(reply: asyncio.Future[pb.ServerFrame]) -> None:
    """Leave no reply unresolved or unread once its call has given up on it: when the write
    failed or the timeout fired, the stream's end may still have set an error on it, and
    asyncio reports an error nobody read (in chat, as a screen asking to press Enter)."""
    if not reply.done():
        reply.cancel()
    elif not reply.cancelled():
        reply.exception()


def _as_broken(end: grpc.aio.AioRpcError) -> grpc.aio.AioRpcError:
    """How a stream's end reaches its calls. The server ends a stream on purpose with
    UNAVAILABLE (not leading: try elsewhere) or UNAUTHENTICATED (the session is gone);
    anything else (a node stopping under it, a connection reset: "Internal error from
    Core") broke the stream, not the calls, which are re-sent elsewhere like after
    UNAVAILABLE."""
    if end.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED):
        return end
    details = f"the stream broke ({end.code().name}: {end.details()})"
    return _rpc_error(grpc.StatusCode.UNAVAILABLE, details, end.trailing_metadata())
