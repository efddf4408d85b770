"""One ``Session`` stream: a logged-in client's calls, replies and live messages.

A unary call costs a client far more than the server's work for it (the
load generator's own ceiling is a few thousand unary calls a second, and
several times that on one stream), so the product's own client keeps one
stream open and sends every session call on it. The rules, in proto/chat.proto
and docs/design.md ("Session streams"), come down to three tasks and two
queues per stream:

- the *reader* takes frames in the order they came and starts each call
  (validation, authentication, proposing its op: see ChatService's two-step
  calls), one after the other, so calls take effect in the order sent;
- the *finisher* waits for the started calls in that same order and turns
  each into its reply frame, so replies come back in order while later calls
  are already proposed (the pipelining that lets one fsync serve many);
- the *pump*, once the client subscribed, turns live events into frames.

Everything they produce goes through one bounded outbox to the one writer,
the handler's generator: a client that stops reading stalls the writer, then
the outbox, then the reader (HTTP/2 flow control pushes back on the client)
and the pump (whose subscriber falls back to the database, as Subscribe does).

What ends the stream (not leading, session gone, the node stopping) travels
through the finisher's queue like a reply, so every reply before it is written
first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from chatnode import validation
from chatnode.live import LiveHub, Subscriber
from chatnode.pending import answered, failed
from chatnode.rpc import Malformed
from chatnode.rpc_metrics import session_call_done
from proto import chat_pb2 as pb
from proto import limits
from proto.errors import (
    AuthError,
    ChatError,
    Internal,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
    call_error,
)
from proto.session_calls import IN_FLIGHT_MAX


class Caller(Protocol):
    """An authenticated caller, as much of it as a stream needs: its session's token."""

    token_hash: str


class Envelope(Protocol):
    """What a session call came with besides its request: the hash of its bearer token and
    its request_id, each read and checked once, when the call first needs it. A unary call
    reads its metadata then (after the leader check, so a follower answers UNAVAILABLE
    whatever the metadata); a frame carries the token its stream opened with and the
    request_id its frame was checked with on arrival."""

    def token_hash(self) -> str: ...

    def request_id(self) -> str: ...


StartCall = Callable[[Any, Envelope], Awaitable[Awaitable[Any]]]
"""Starts one call from its request: validates, authenticates and proposes, and returns what
to await for the reply (:mod:`chatnode.pending`)."""


class StreamHost(Protocol):
    """What a stream needs of the service that opened it (ChatService)."""

    @property
    def hub(self) -> LiveHub: ...

    @property
    def stream_calls(self) -> Mapping[str, StartCall]:
        """How each call of proto.session_calls but subscribe starts, by its frame field."""

    async def authenticate(self, envelope: Envelope) -> Caller: ...

    def live_events(self, subscriber: Subscriber, after_id: int) -> AsyncIterator[Any]: ...


log = logging.getLogger(__name__)

OUTBOX_FRAMES = 256
"""Frames waiting for the writer before the stream's tasks wait for it."""

REPLY_BYTES = 8 << 20
"""Bytes of replies one stream may hold, written or not yet: a call reserves what its reply
may take before it starts, and gets it back once the reply is written. A client that
stops reading holds at most this much of the server's memory per stream."""

RESERVED_BYTES: dict[str, int] = {
    "read_messages": limits.READ_REPLY_MAX_BYTES + (1 << 20),  # bodies, and the rest
    "list_accounts": 64 << 10,  # 1,000 names of at most 32 bytes, and framing
    "history": limits.READ_REPLY_MAX_BYTES + (1 << 20),  # like read_messages
    "list_sessions": 64 << 10,  # 200 sessions of under 200 bytes, and framing
}
"""What a reply of each call may take; any other reply is small (SMALL_REPLY_BYTES)."""

SMALL_REPLY_BYTES = 1 << 10
MESSAGE_FRAME_BYTES = 1 << 10  # a live message's frame, beyond its body

CARRIES_REQUEST_ID = frozenset(
    field.name
    for field in pb.ClientFrame.DESCRIPTOR.oneofs_by_name["call"].fields
    if "request_id" in field.message_type.fields_by_name
)
"""The calls whose request has a request_id of its own, which must be empty or the frame's."""


@dataclass(frozen=True, slots=True)
class _Framed:
    """A frame's Envelope: the stream's token hash, and the request_id the frame arrived
    with, already checked."""

    token: str
    checked_request_id: str

    def token_hash(self) -> str:
        return self.token

    def request_id(self) -> str:
        return self.checked_request_id


@dataclass(frozen=True, slots=True)
class _End:
    """The stream must end, after the replies before it: with this error, or cleanly."""

    error: ChatError | None = None


@dataclass(frozen=True, slots=True)
class _Started:
    request_id: str
    call: str  # the frame's field name, which is also the reply's
    pending: Awaitable[Any]
    reserved: int  # bytes of the stream's budget its reply holds until written
    at_s: float  # when its frame was read (time.perf_counter)


class _ByteBudget:
    """The bytes a stream's replies may hold (REPLY_BYTES): taken before, given back after.

    A reservation larger than the whole budget goes ahead once nothing else holds any.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._held = 0
        self._changed = asyncio.Condition()

    async def take(self, size: int) -> None:
        async with self._changed:
            await self._changed.wait_for(
                lambda: self._held == 0 or self._held + size <= self._limit
            )
            self._held += size

    async def give(self, size: int) -> None:
        async with self._changed:
            self._held -= size
            self._changed.notify_all()


class SessionStream:
    """The state of one open stream; :meth:`frames` is what the handler yields."""

    def __init__(
        self,
        service: StreamHost,
        token_hash: str,
        owner: tuple[int, str],
        closing: asyncio.Future[Unavailable],
    ) -> None:
        self._service = service
        self._closing = closing
        self._token_hash = token_hash  # of the bearer token the stream was opened with
        self._owner = owner  # the account id and username the stream was opened for
        self._outbox: asyncio.Queue[tuple[pb.ServerFrame | _End, int]] = asyncio.Queue(
            OUTBOX_FRAMES
        )  # each frame with the bytes of the budget it holds
        self._budget = _ByteBudget(REPLY_BYTES)
        self._started: asyncio.Queue[_Started | _End | None] = asyncio.Queue()
        self._in_flight = 0
        self._subscriber: Subscriber | None = None
        self._after_id = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def frames(
        self, requests: AsyncIterator[object], first: pb.ServerFrame
    ) -> AsyncIterator[pb.ServerFrame]:
        """Every frame to write, first included; raises the error that ends the stream."""
        self._spawn(self._read(requests), "reader")
        self._spawn(self._finish(), "finisher")
        self._spawn(self._end_on_closing(), "closing")
        try:
            yield first
            while True:
                item, reserved = await self._outbox.get()
                if isinstance(item, _End):
                    if item.error is None:
                        return
                    raise item.error
                yield item
                await self._budget.give(reserved)
        finally:
            for task in self._tasks:
                task.cancel()
            self._discard_unfinished()
            if self._subscriber is not None:
                self._service.hub.unsubscribe(self._subscriber)

    # -- the reader ---------------------------------------------------------------

    async def _read(self, requests: AsyncIterator[object]) -> None:
        async for frame in requests:
            if isinstance(frame, Malformed):
                await self._refuse("", InvalidArgument(f"malformed frame: {frame.reason}"))
            elif self._in_flight >= IN_FLIGHT_MAX:
                await self._refuse(
                    frame.request_id,
                    ResourceExhausted(
                        f"at most {IN_FLIGHT_MAX} calls in flight per stream; wait for replies"
                    ),
                )
            else:
                self._in_flight += 1
                call = frame.WhichOneof("call") or ""
                reserved = RESERVED_BYTES.get(call, SMALL_REPLY_BYTES)
                await self._budget.take(reserved)
                self._started.put_nowait(await self._start(frame, call, reserved))
        self._started.put_nowait(None)  # the client is done sending: end after the replies

    async def _start(self, frame: pb.ClientFrame, call: str, reserved: int) -> _Started:
        """Start the frame's call; a call that fails to start fails in its place in line."""
        at_s = time.perf_counter()
        try:
            pending = await self._start_call(frame, call)
        except ChatError as exc:
            pending = failed(exc)
        return _Started(frame.request_id, call, pending, reserved, at_s)

    async def _start_call(self, frame: pb.ClientFrame, call: str) -> Awaitable[Any]:
        """Check the frame's request_id, the one check it gets, and start its call with it:
        the frame's is the call's (a call's own may only repeat it)."""
        request_id = frame.request_id
        if not request_id:
            raise InvalidArgument("every frame needs a request_id")
        validation.request_id(request_id)
        if not call:
            raise InvalidArgument("the frame carries no call")
        request = getattr(frame, call)
        envelope = _Framed(self._token_hash, request_id)
        if call == "subscribe":
            return await self._subscribe(request, envelope)
        if call in CARRIES_REQUEST_ID and request.request_id not in ("", request_id):
            raise InvalidArgument("the call's request_id differs from its frame's")
        return await self._service.stream_calls[call](request, envelope)

    async def _subscribe(
        self, request: pb.SubscribeRequest, envelope: Envelope
    ) -> Awaitable[pb.Subscribed]:
        """Register for live delivery now (the user's stream limit applies); the finisher
        starts the pump once the reply is in the outbox, so messages follow it."""
        if self._subscriber is not None:
            raise InvalidArgument("this stream is already subscribed")
        caller = await self._service.authenticate(envelope)
        self._subscriber = self._service.hub.subscribe(*self._owner, caller.token_hash)
        self._after_id = request.after_id
        return answered(pb.Subscribed())

    async def _refuse(self, request_id: str, error: ChatError) -> None:
        await self._outbox.put((_error_frame(request_id, error), 0))

    # -- the finisher -------------------------------------------------------------

    async def _finish(self) -> None:
        while (started := await self._started.get()) is not None:
            if isinstance(started, _End):
                await self._outbox.put((started, 0))
                return
            frame = await self._reply(started)
            self._in_flight -= 1
            if isinstance(frame, _End):
                await self._outbox.put((frame, 0))
                return
            await self._outbox.put((frame, started.reserved))
            if started.call == "subscribe" and frame.HasField("subscribe"):
                self._spawn(self._pump(), "pump")
        await self._outbox.put((_End(), 0))

    async def _reply(self, started: _Started) -> pb.ServerFrame | _End:
        try:
            reply = await started.pending
        except ChatError as exc:
            _done(started, exc.code)
            if isinstance(exc, Unavailable | AuthError):
                return _End(exc)
            return _error_frame(started.request_id, exc)
        except Exception:
            _done(started, grpc.StatusCode.INTERNAL)
            raise
        _done(started, grpc.StatusCode.OK)
        return pb.ServerFrame(request_id=started.request_id, **{started.call: reply})

    # -- the pump -----------------------------------------------------------------

    async def _pump(self) -> None:
        assert self._subscriber is not None
        try:
            async for event in self._service.live_events(self._subscriber, self._after_id):
                if event.HasField("message"):
                    size = len(event.message.body) + MESSAGE_FRAME_BYTES
                    await self._budget.take(size)
                    await self._outbox.put((pb.ServerFrame(message=event.message), size))
                else:
                    await self._outbox.put((pb.ServerFrame(leader=event.leader), 0))
        except ChatError as exc:
            self._started.put_nowait(_End(exc))  # after the replies already due

    async def _end_on_closing(self) -> None:
        """The node is stopping or no longer leads (LiveHub.close_all): end with UNAVAILABLE
        after the replies already due, subscribed or not, so the client moves on."""
        self._started.put_nowait(_End(await self._closing))

    # -- plumbing -----------------------------------------------------------------

    def _discard_unfinished(self) -> None:
        """Let the calls nobody will wait for now run out on their own: their ops still
        apply (or not) as the log decides, and a client re-sending them is answered
        exactly once. (Closing them instead would orphan the awaitables they wrap.)"""
        while not self._started.empty():
            started = self._started.get_nowait()
            if isinstance(started, _Started):
                asyncio.ensure_future(started.pending).add_done_callback(_unobserved)

    def _spawn(self, work: Awaitable[None], name: str) -> None:
        """Run work for this stream; a bug in it ends the stream with INTERNAL, never a
        stream that stays open and answers nothing."""

        async def guarded() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError:
                await self._outbox.put((_End(), 0))  # client gone
            except Exception:
                log.exception("session stream %s failed", name, extra={"event": "internal_error"})
                internal = Internal("internal error; the node's log has the details")
                await self._outbox.put((_End(internal), 0))

        self._tasks.append(asyncio.create_task(guarded(), name=f"session-{name}"))


def _done(started: _Started, code: grpc.StatusCode) -> None:
    session_call_done(started.call, code, time.perf_counter() - started.at_s)


def _unobserved(done: asyncio.Future[Any]) -> None:
    """The outcome of a call whose stream is gone: nobody is told, so nothing is logged."""
    if not done.cancelled():
        done.exception()


def _error_frame(request_id: str, error: ChatError) -> pb.ServerFrame:
    return pb.ServerFrame(request_id=request_id, error=call_error(error))
