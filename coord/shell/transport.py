"""gRPC between peers: how protocol messages travel, and how dead peers are noticed fast.

Routes, per destination, in order of preference:

* **down a stream**: a follower that opened its ``Stream`` to this node gets
  this node's messages as responses on it;
* **up a stream**: this node's messages to the leader it follows go as writes
  on the one stream it keeps open to that leader;
* **Deliver**: everything else (votes, the first appends of a new leader) as
  unary calls with a deadline, so a hung peer never stalls anyone.

Each peer has one outbound queue and one sender task, so messages to a peer
keep their order, and whatever queued up while a send was in flight leaves as
one batch. When a call or stream to a peer fails, the transport tries a plain
TCP connect to the peer's address: a *refused* connection means no process
serves there, which the core may act on at once instead of waiting out a lease.

Who may speak: every call this node makes carries its credentials
(:mod:`coord.shell.auth`), and every batch it receives must come from the member
the call was authenticated as. A batch is checked whole before any of it
reaches the core: it must decode, name that member in ``from_id`` and in every
message's ``sender``, and pass the coordinator's membership check. Otherwise
nothing in it is delivered, the caller gets ``PERMISSION_DENIED`` and
``chat_peer_refused_total`` counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import grpc

from coord.core.messages import AppendReply, Message
from coord.shell import codec
from coord.shell.auth import authenticated_peer, speaks_for_another
from coord.shell.clock_offsets import ClockOffsets, estimate
from coord.shell.metrics import (
    PEER_ENTRIES_SENT,
    PEER_ENTRY_WRITES,
    PEER_REFUSED,
    PEER_SEND_DROPPED,
)
from proto import replication_pb2 as rpb
from proto import replication_pb2_grpc
from proto.addresses import peer_address
from proto.credentials import Metadata

log = logging.getLogger(__name__)

CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.max_receive_message_length", 16 << 20),
    ("grpc.max_send_message_length", 16 << 20),
    ("grpc.keepalive_time_ms", 10_000),
]
MAX_QUEUED = 1024  # messages per peer; the protocol resends what is dropped
MAX_DOWN_BATCHES = 256  # batches queued on a follower's stream; beyond it they are dropped
PROBE_TIMEOUT_S = 0.25
SNAPSHOT_TIMEOUT_S = 600.0
PROBE_REUSE_S = 0.05  # failures in a burst (stream, votes) share one probe


async def connection_refused(address: str) -> bool:
    """True when nothing listens at address (RST), False when something does or we can't tell."""
    host, _, port = address.rpartition(":")
    try:
        # asyncio.timeout, not wait_for: 3.11's wait_for drops a cancel that arrives as the
        # connection completes, and a transport closing would then wait on this task for ever.
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            _, writer = await asyncio.open_connection(host.strip("[]"), int(port))
    except ConnectionRefusedError:
        return True
    except (OSError, TimeoutError, ValueError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return False


@dataclass(eq=False)
class _Link:
    """Everything this node keeps per peer."""

    peer: int
    address: str
    queue: list[rpb.PeerMessage] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    down: asyncio.Queue[rpb.PeerBatch | None] | None = None  # the peer's stream to us (bounded)
    task: asyncio.Task[None] | None = None
    last_probe: float = 0.0
    refused: bool = False  # what the last probe found; reused for PROBE_REUSE_S


class Transport:
    """Sends and receives protocol messages for one node."""

    def __init__(
        self,
        node_id: int,
        deliver: Callable[[Message], None],
        unreachable: Callable[[int], None],
        call_timeout_s: float,
        credentials: grpc.ChannelCredentials | None = None,
        *,
        metadata: Metadata = (),
        admit: Callable[[int, list[Message]], str | None],
        supervise: Callable[..., None],
    ) -> None:
        self.id = node_id
        self._supervise = supervise
        self._deliver_local = deliver
        self._admit = admit
        self._metadata = metadata
        self._unreachable = unreachable
        self._timeout = call_timeout_s
        self._credentials = credentials
        self._links: dict[int, _Link] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._up_peer = 0
        self._up_call: grpc.aio.StreamStreamCall | None = None
        self._up_task: asyncio.Task[None] | None = None
        self._closed = False
        self._background: set[asyncio.Task[None]] = set()
        self.offsets = ClockOffsets()  # the followers' wall clocks, as this leader sees them

    # -- membership and routing ----------------------------------------------------

    def set_members(self, members: dict[int, str]) -> None:
        """Track the peers of the current view (called whenever the view changes), at their
        peer listeners."""
        self.offsets.forget(set(members))
        for peer, member_address in members.items():
            if peer == self.id:
                continue
            address = peer_address(member_address)
            link = self._links.get(peer)
            if link is None:
                link = self._links[peer] = _Link(peer, address)
                link.task = asyncio.create_task(self._send_loop(link), name=f"send-{peer}")
                self._supervise(link.task)
            link.address = address

    def send(self, to: int, msg: Message) -> None:
        link = self._links.get(to)
        if link is None or self._closed:
            return
        wire = codec.to_pb(msg)
        if isinstance(msg, AppendReply):
            wire.append_reply.wall_ms = _wall_ms()
        if link.down is not None and not link.queue and not link.down.full():
            # The common case on a leader: straight onto the follower's stream, no task hop.
            link.down.put_nowait(rpb.PeerBatch(from_id=self.id, messages=[wire]))
            return
        if len(link.queue) >= MAX_QUEUED:
            del link.queue[: MAX_QUEUED // 2]
            PEER_SEND_DROPPED.inc(MAX_QUEUED // 2)
        link.queue.append(wire)
        link.wake.set()

    def follow(self, leader: int) -> None:
        """Keep one stream open to leader (0: to nobody)."""
        if leader == self._up_peer or self._closed:
            return
        if self._up_task is not None:
            self._up_task.cancel()
        self._up_peer, self._up_call, self._up_task = leader, None, None
        if leader and leader != self.id and leader in self._links:
            self._up_task = asyncio.create_task(self._upstream(leader), name=f"follow-{leader}")
            self._supervise(self._up_task)

    async def close(self) -> None:
        self._closed = True
        tasks = [link.task for link in self._links.values() if link.task] + [self._up_task]
        for link in self._links.values():
            link.wake.set()
            if link.down is not None:
                _end(link.down)
        for task in tasks:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for channel in self._channels.values():
            await channel.close()

    # -- server side -------------------------------------------------------------------

    async def serve_stream(
        self, requests: AsyncIterator[rpb.PeerBatch], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rpb.PeerBatch]:
        """A follower's stream: its batches come up, ours go down.

        The stream speaks for the member it was authenticated as, from its
        first batch on; a batch that speaks for anyone else ends it.
        """
        peer = authenticated_peer()
        try:
            hello = await anext(requests)
        except StopAsyncIteration:
            return
        link = self._links.get(peer)
        refusal = self._receive(hello, peer) or (None if link else f"node {peer} is no member")
        if refusal is not None or link is None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, refusal or "")
            return
        if link.down is not None:
            _end(link.down)  # a newer stream from the same peer replaces the old
        down: asyncio.Queue[rpb.PeerBatch | None] = asyncio.Queue(MAX_DOWN_BATCHES)
        link.down = down
        link.wake.set()
        refused: list[str] = []
        reader = asyncio.create_task(
            self._read_up(requests, down, peer, refused), name=f"stream-from-{peer}"
        )
        self._supervise(reader, finite=True)
        try:
            while (batch := await down.get()) is not None:
                _count_entries(batch)
                yield batch
            if refused:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, refused[0])
        finally:
            reader.cancel()
            if link.down is down:
                link.down = None
                if not self._closed:
                    probe = asyncio.create_task(self._probe(link), name=f"probe-{peer}")
                    self._supervise(probe, finite=True)
                    self._background.add(probe)
                    probe.add_done_callback(self._background.discard)

    async def serve_deliver(self, batch: rpb.PeerBatch, context: grpc.aio.ServicerContext) -> None:
        refusal = self._receive(batch, authenticated_peer())
        if refusal is not None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, refusal)

    async def _read_up(
        self,
        requests: AsyncIterator[rpb.PeerBatch],
        down: asyncio.Queue[rpb.PeerBatch | None],
        peer: int,
        refused: list[str],
    ) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for batch in requests:
                if (refusal := self._receive(batch, peer)) is not None:
                    refused.append(refusal)
                    break
        _end(down)

    def _receive(self, batch: rpb.PeerBatch, peer: int) -> str | None:
        """Deliver a batch from ``peer`` whole, or none of it: the reason it was refused."""
        try:
            msgs = [codec.from_pb(wire) for wire in batch.messages]
        except (ValueError, KeyError, TypeError) as exc:
            return self._refuse(peer, "undecodable", f"undecodable message: {exc}")
        if batch.from_id != peer or any(msg.sender != peer for msg in msgs):
            return self._refuse(peer, "sender", str(speaks_for_another(peer)))
        if (refusal := self._admit(peer, msgs)) is not None:
            return self._refuse(peer, "non_member", refusal)
        for msg in msgs:
            self._deliver_local(msg)
        self._measure_clock(peer, batch)
        return None

    def _measure_clock(self, peer: int, batch: rpb.PeerBatch) -> None:
        """Offer each stamped AppendReply's round trip to the offset estimate."""
        for wire in batch.messages:
            reply = wire.append_reply if wire.HasField("append_reply") else None
            if reply is not None and reply.wall_ms > 0 and reply.echo_sent_at_ms > 0:
                now_mono = time.monotonic_ns() // 1_000_000
                sample = estimate(reply.wall_ms, reply.echo_sent_at_ms, now_mono, _wall_ms())
                self.offsets.offer(peer, sample)

    @staticmethod
    def _refuse(peer: int, reason: str, message: str) -> str:
        PEER_REFUSED.labels(reason).inc()
        log.warning(
            "refused a batch from node %d: %s", peer, message, extra={"event": "peer_refused"}
        )
        return message

    # -- client side -------------------------------------------------------------------

    def _stub(self, address: str) -> replication_pb2_grpc.ReplicationStub:
        channel = self._channels.get(address)
        if channel is None:
            if self._credentials is None:
                channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            else:
                channel = grpc.aio.secure_channel(address, self._credentials, CHANNEL_OPTIONS)
            self._channels[address] = channel
        return replication_pb2_grpc.ReplicationStub(channel)

    async def _send_loop(self, link: _Link) -> None:
        while not self._closed:  # close() also cancels us; this ends a loop whose cancel was lost
            await link.wake.wait()
            link.wake.clear()
            if not link.queue:
                continue
            batch = rpb.PeerBatch(from_id=self.id, messages=link.queue)
            link.queue = []
            if link.down is not None:
                _offer(link.down, batch)
            elif link.peer == self._up_peer and self._up_call is not None:
                await self._write_up(link, batch)
            else:
                await self._deliver(link, batch)

    async def _write_up(self, link: _Link, batch: rpb.PeerBatch) -> None:
        call = self._up_call
        assert call is not None
        try:
            # No timeout here: a stalled leader is the lease's business, and when we stop
            # following it the upstream task cancels the call, which ends this write.
            await call.write(batch)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            call.cancel()

    async def _deliver(self, link: _Link, batch: rpb.PeerBatch) -> None:
        _count_entries(batch)
        try:
            await self._stub(link.address).Deliver(
                batch, timeout=self._timeout, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                await self._probe(link)

    async def _upstream(self, leader: int) -> None:
        """Hold the stream to the leader; reopen it if it breaks while we still follow it."""
        link = self._links[leader]
        while not self._closed:
            call = self._stub(link.address).Stream(metadata=self._metadata)
            try:
                async with asyncio.timeout(self._timeout):
                    await call.write(rpb.PeerBatch(from_id=self.id))
                self._up_call = call
                link.wake.set()
                async for batch in call:
                    if self._receive(batch, leader) is not None:
                        break
            except (grpc.aio.AioRpcError, TimeoutError, asyncio.InvalidStateError):
                pass
            finally:
                self._up_call = None
                call.cancel()
            await self._probe(link)
            await asyncio.sleep(0.05)  # back-off before reconnecting to the same leader

    async def send_snapshot(self, peer: int, chunks: Iterator[rpb.SnapshotChunk]) -> None:
        """Stream a snapshot to peer; a generous deadline, since it may be large."""
        link = self._links[peer]
        reply = await self._stub(link.address).InstallSnapshot(
            chunks, timeout=SNAPSHOT_TIMEOUT_S, metadata=self._metadata
        )
        if not reply.staged:
            raise OSError(f"node {peer} did not stage the snapshot")

    async def _probe(self, link: _Link) -> None:
        """Tell the core at once if nothing serves at the peer's address any more."""
        now = time.monotonic()
        if now - link.last_probe >= PROBE_REUSE_S:
            link.last_probe = now
            link.refused = await connection_refused(link.address)
        if link.refused:
            self._unreachable(link.peer)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _count_entries(batch: rpb.PeerBatch) -> None:
    """How many entries each write carries: the batching the bench reports."""
    entries = sum(len(m.append.entries) for m in batch.messages if m.HasField("append"))
    if entries:
        PEER_ENTRY_WRITES.inc()
        PEER_ENTRIES_SENT.inc(entries)


def _offer(down: asyncio.Queue[rpb.PeerBatch | None], batch: rpb.PeerBatch) -> None:
    """Queue a batch on a follower's stream; a full queue drops it (the protocol resends)."""
    if down.full():
        PEER_SEND_DROPPED.inc()
        return
    down.put_nowait(batch)


def _end(down: asyncio.Queue[rpb.PeerBatch | None]) -> None:
    """Tell a stream's writer to finish, making room for the word if the queue is full."""
    if down.full():
        down.get_nowait()
    down.put_nowait(None)
