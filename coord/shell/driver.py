"""The coordinator shell: the sans-IO core driven by asyncio, SQLite and gRPC.

One driver task carries out the core's ``Ready`` values strictly in order
(:mod:`coord.core.ready`): persist (in a worker thread, one transaction and one
fsync per Ready), then send, then hand committed entries to the state machine.
Proposals and messages that arrive while an fsync is running accumulate in the
core and leave together in the next Ready: that is group commit, and the
reason one fsync serves many client calls.

One exception to "persist, then send": a leader's ``Append`` messages leave
before the leader's own fsync, unless the Ready changes the term or vote
(:mod:`coord.core.ready_order`, shared with the simulator). A follower may then
hold entries the leader never persisted, which Raft allows (they were never
acknowledged); it means the follower's fsync overlaps the leader's instead of
following it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import sqlite3
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import grpc

from coord.boundary import (
    Entry,
    LeaderView,
    NotLeader,
    Proposal,
    StateHooks,
    Status,
)
from coord.core import errors as core_errors
from coord.core.config import ClusterConfig, ConfigChange
from coord.core.messages import Append, InstallSnapshot, Message
from coord.core.node import Node, Role
from coord.core.ready import Ready, SnapshotOrder, SoftState
from coord.core.ready_order import split_messages
from coord.core.settings import Settings
from coord.shell import snapshots
from coord.shell.auth import speaks_for_another
from coord.shell.disk import DiskGuard
from coord.shell.log_store import LogStore
from coord.shell.metrics import HEARTBEAT_GAP
from coord.shell.saves import OperatorSaves
from coord.shell.services import AdminService, ReplicationService
from coord.shell.transport import Transport
from proto import replication_pb2 as rpb
from proto import replication_pb2_grpc
from proto.credentials import Metadata

log = logging.getLogger(__name__)
T = TypeVar("T")

# A follower writes a Ready with at most this many entries on the event loop, not in the
# log's worker thread: for a small write the two thread hops cost more CPU and latency
# than its fsync blocks the loop (docs/performance.md, "Small log writes on a follower's
# event loop"). Larger ones go to the worker so the loop reads the next frames meanwhile.
INLINE_SAVE_ENTRIES = 8


def now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class PeerSettings:
    """How this node talks with its peers: TLS, the credentials each call carries,
    how long a call may take, and the largest snapshot a peer may stream to it."""

    credentials: grpc.ChannelCredentials | None = None
    call_timeout_s: float = 0.5
    metadata: Metadata = ()
    snapshot_max_bytes: int = 64 << 30


@dataclass(frozen=True, slots=True)
class CompactionSettings:
    """How often the applied state is checkpointed, and how much log stays behind it."""

    log_keep_entries: int = 10_000
    checkpoint_interval_s: float = 2.0


class ReplicatedCoordinator:
    """Implements :class:`coord.boundary.Coordinator` for a cluster of one or more nodes."""

    def __init__(
        self,
        node_id: int,
        members: dict[int, str],
        data_dir: Path,
        settings: Settings,
        min_insync: int = 1,
        peers: PeerSettings | None = None,
        compaction: CompactionSettings | None = None,
        *,
        join: bool = False,
    ) -> None:
        self.id = node_id
        self._members = members
        self._data_dir = data_dir
        self._settings = settings
        self._min_insync = min_insync
        self._peers = peers or PeerSettings()
        self._compaction = compaction or CompactionSettings()
        self._join = join
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"log-{node_id}")
        self._in_worker_now = 0  # log-store writes handed to the worker and not yet returned
        self._wake = asyncio.Event()
        self._advanced = asyncio.Event()  # set after each Ready: commit or lease may have moved
        self._committed: asyncio.Queue[list[Entry] | None] = asyncio.Queue()
        self._watchers: list[asyncio.Queue[LeaderView | None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self._sending_snapshot: set[int] = set()
        self._receiving_snapshot: set[int] = set()
        self._saves = OperatorSaves(data_dir, self._capture)
        self._last_append: tuple[tuple[int, int], int] = ((0, 0), 0)  # (leader, term), time
        self._synced_view: tuple[int, int] | None = None
        self.failed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.disk = DiskGuard()

    # -- lifecycle -----------------------------------------------------------------

    async def start(self, applied_index: int, hooks: StateHooks) -> None:
        self._hooks = hooks
        self._store = await self._in_worker(LogStore, self._data_dir / "log.db")
        pending = self._store.pending_restore()
        if pending is not None:  # we crashed between resetting the log and restoring the state
            applied_index = await self._restore(pending)
        snapshots.discard_staged(self._data_dir)
        # Initial members all write the same first config entry; a node that joins a
        # running cluster starts empty and learns the configuration from the leader.
        bootstrap = (
            None if self._join else ClusterConfig.create(self._members, min_insync=self._min_insync)
        )
        self.node = Node(
            self.id,
            self._store,
            self._settings,
            random.Random(),
            now_ms(),
            applied=applied_index,
            bootstrap=bootstrap,
        )
        self.transport = Transport(
            self.id,
            self._receive,
            self._peer_unreachable,
            self._peers.call_timeout_s,
            self._peers.credentials,
            metadata=self._peers.metadata,
            admit=self._admit,
            supervise=self.supervise,
        )
        self._sync_members()
        self._running = True
        self._tasks = [
            asyncio.create_task(self._drive(), name="coord-driver"),
            asyncio.create_task(self._tick(), name="coord-ticker"),
            asyncio.create_task(self._compact(), name="coord-compactor"),
        ]
        for task in self._tasks:
            self.supervise(task)
        self._wake.set()

    def supervise(self, task: asyncio.Task[Any], *, finite: bool = False) -> None:
        """Report on ``failed`` if ``task`` raises, or (unless ``finite``) ends at all.

        A background task that dies leaves a node that looks alive and does
        nothing; the process should exit instead, so its supervisor restarts it.
        A fault of the machine (an I/O error) is said in one line; anything
        else is a bug, and its traceback goes to the log first.
        """
        task.add_done_callback(lambda done: self._task_ended(done, finite))

    def _task_ended(self, task: asyncio.Task[Any], finite: bool) -> None:
        if task.cancelled() or self.failed.done() or not self._running:
            return
        exc = task.exception()
        if exc is None and finite:
            return
        if exc is not None and not isinstance(exc, OSError | sqlite3.OperationalError):
            log.error("%s died", task.get_name(), exc_info=exc, extra={"event": "task_died"})
        reason = f"{type(exc).__name__}: {exc}" if exc else "returned"
        self.failed.set_result(f"{task.get_name()} stopped ({reason})")

    async def stop(self) -> None:
        self._running = False
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.transport.close()
        self._committed.put_nowait(None)
        for watcher in self._watchers:
            watcher.put_nowait(None)
        await self._in_worker(self._store.close)
        self._io.shutdown(wait=True)

    # -- the boundary ---------------------------------------------------------------

    def propose(self, payload: bytes) -> Proposal:
        if self.disk.failing:
            raise NotLeader("", f"this node cannot write to its disk now ({self.disk.fault})")
        try:
            index, term = self.node.propose(payload, now_ms())
        except core_errors.Redirect as exc:
            raise NotLeader(self._address_of(exc.leader_id), str(exc)) from exc
        self._wake.set()
        return Proposal(index, term)

    async def committed(self) -> AsyncIterator[list[Entry]]:
        while (batch := await self._committed.get()) is not None:
            yield batch

    async def read_barrier(self) -> int:
        """The read index; a fresh leader makes callers wait (a lease at most) for its
        first entry to commit and its lease to form, rather than turn them away."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.lease_ms / 1000
        while True:
            try:
                return self.node.read_index(now_ms())
            except core_errors.Redirect as exc:
                if self.node.role is not Role.LEADER or loop.time() >= deadline:
                    raise NotLeader(self._address_of(exc.leader_id), str(exc)) from exc
            self._advanced.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):  # 3.11's wait_for can drop a cancel
                    await self._advanced.wait()

    async def leader_changes(self) -> AsyncIterator[LeaderView | None]:
        queue: asyncio.Queue[LeaderView | None] = asyncio.Queue()
        self._watchers.append(queue)
        try:
            yield self._leader_view(self.node.leader_id)
            while self._running:
                yield await queue.get()
        finally:
            self._watchers.remove(queue)

    def status(self) -> Status:
        status = replace(self.node.status(now_ms()), fault=self.disk.fault)
        if status.role != "leader":
            return status  # offsets are measured on the leader's heartbeats
        offsets = self.transport.offsets
        members = tuple(
            replace(m, clock_offset_ms=offsets.offset_ms(m.id)) if m.id != self.id else m
            for m in status.members
        )
        return replace(status, members=members)

    def follower_lags(self) -> dict[int, tuple[int, int]]:
        """On the leader: each follower's lag behind its log, in entries and in ms."""
        return self.node.follower_lags(now_ms())

    def leader_address(self) -> str:
        return self._address_of(self.node.leader_id)

    def wall_clock_agreed(self, wall_ms: int, mono_ms: int) -> bool:
        view = self.node.view
        if self.node.role is not Role.LEADER or view is None:
            return False  # only a leader hears every member's clock
        members = view.config.member_ids
        offsets = self.transport.offsets
        agreeing = 1 + sum(offsets.agrees(m, wall_ms, mono_ms) for m in members if m != self.id)
        return 2 * agreeing > len(members)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        replication_pb2_grpc.add_ReplicationServicer_to_server(ReplicationService(self), server)
        replication_pb2_grpc.add_AdminServicer_to_server(AdminService(self), server)

    # -- the peer service's endpoint (services.PeerEndpoint); served once started ------

    def serve_stream(
        self, requests: AsyncIterator[rpb.PeerBatch], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rpb.PeerBatch]:
        return self.transport.serve_stream(requests, context)

    async def serve_deliver(self, batch: rpb.PeerBatch, context: grpc.aio.ServicerContext) -> None:
        await self.transport.serve_deliver(batch, context)

    async def receive_snapshot(self, chunks: AsyncIterator[rpb.SnapshotChunk], peer: int) -> None:
        """Stage a snapshot streamed by ``peer``, then let the core decide on it.

        Raises :class:`Denied` if the stream speaks for another node, and
        :class:`snapshots.SnapshotRefused` if it is not from the leader this
        node follows in its term, too big, or damaged; nothing changes then.
        """

        def admit(offer: snapshots.Offer, size: int) -> None:
            if offer.sender != peer:
                raise speaks_for_another(peer)
            node = self.node
            if node.role is not Role.FOLLOWER or (node.leader_id, node.term) != (peer, offer.term):
                raise snapshots.SnapshotRefused(
                    f"node {peer} is not the leader this node follows in term {offer.term}"
                )
            if size > (bound := self._peers.snapshot_max_bytes):
                raise snapshots.SnapshotRefused(f"a {size}-byte snapshot is over the {bound} bound")

        offer = await snapshots.receive(chunks, self._data_dir, admit, self._receiving_snapshot)
        msg = InstallSnapshot(offer.term, offer.sender, offer.index, offer.index_term, offer.config)
        try:
            self.node.receive(msg, now_ms())
        except core_errors.RemoteProtocolError as exc:
            snapshots.staged_path(self._data_dir, offer.index).unlink(missing_ok=True)
            raise snapshots.SnapshotRefused(str(exc)) from None
        finally:
            self._wake.set()

    # -- snapshots and compaction ---------------------------------------------------------

    async def _restore(self, index: int) -> int:
        """Replace the state by the staged snapshot at index (durably: the hook returns once
        the new state is on disk), then clear the pending mark, then drop that copy only:
        another may have been staged meanwhile."""
        staged = snapshots.staged_path(self._data_dir, index)
        applied = await self._hooks.restore(staged)
        await self._write_log(self._store.restored)
        staged.unlink(missing_ok=True)
        log.info("installed snapshot at index %d", index, extra={"event": "snapshot_installed"})
        return applied

    def _spawn_snapshot(self, order: SnapshotOrder) -> None:
        if order.to in self._sending_snapshot:
            return
        self._sending_snapshot.add(order.to)
        task = asyncio.create_task(self._send_snapshot(order), name=f"snapshot-{order.to}")
        self.supervise(task, finite=True)
        task.add_done_callback(lambda _: self._sending_snapshot.discard(order.to))

    async def _send_snapshot(self, order: SnapshotOrder) -> None:
        """Capture the applied state and stream it to a follower behind the compacted log."""
        path = self._data_dir / f"snapshot-out-{order.to}.db"
        try:
            offer = await self._capture(path, order.term)
            await self.transport.send_snapshot(order.to, snapshots.chunks(path, offer))
            log.info(
                "sent snapshot at index %d to node %d",
                offer.index,
                order.to,
                extra={"event": "snapshot_sent"},
            )
        except grpc.aio.AioRpcError as exc:
            log.warning(
                "snapshot to node %d failed: %s %s",
                order.to,
                exc.code().name,
                exc.details(),
                extra={"event": "snapshot_failed"},
            )
        except (OSError, core_errors.CoordError) as exc:
            log.warning(
                "snapshot to node %d failed: %s", order.to, exc, extra={"event": "snapshot_failed"}
            )
        finally:
            path.unlink(missing_ok=True)

    async def _capture(self, path: Path, term: int) -> snapshots.Offer:
        """Copy the applied state to path (without stopping applies) and say what it is:
        its index, the term of that entry and the config in force there."""
        index = await self._hooks.capture(path)
        store = self._store
        config = store.last_config(store.first_index(), index) or store.snapshot().config
        if config is None:
            raise core_errors.LocalProtocolError(f"no config entry at or before index {index}")
        return snapshots.Offer(term, self.id, index, store.term(index), config)

    async def _compact(self) -> None:
        """Checkpoint the state now and then, and drop log entries it durably holds.

        Automatic checkpoints of the state are off (they would fsync on the event
        loop), so this also bounds the state's WAL. ``log_keep_entries`` stay
        behind the durable state so that a slightly lagging follower catches up
        from the log rather than by snapshot.
        """
        keep = self._compaction.log_keep_entries
        checkpointed = 0
        while True:
            await asyncio.sleep(self._compaction.checkpoint_interval_s)
            if self.node.commit == checkpointed:
                continue
            durable = await self.disk.write("state", self._hooks.checkpoint)
            if durable is None:
                continue
            checkpointed = durable
            if durable - self._store.first_index() > 2 * keep:
                await self._write_log(self._store.compact, durable - keep)

    async def _save(self, ready: Ready) -> None:
        """Write a Ready's entries and hard state durably: a follower's small one on the
        loop, unless the worker holds the store (a compaction, an install), whose
        transaction it must not interleave with. A leader always writes in the worker:
        the proposals that arrive while its fsync runs are its next Ready's batch, and
        on the loop none would (unary calls then went one entry to an fsync)."""
        save = functools.partial(self._store.save, ready.hard_state, None, ready.entries)
        leading = self.node.role is Role.LEADER
        if leading or len(ready.entries) > INLINE_SAVE_ENTRIES or self._in_worker_now:
            await self._write_log(save)
            return

        async def on_the_loop() -> None:
            save()

        await self.disk.write("log", on_the_loop)

    async def _write_log(self, fn: Callable[..., T], *args: object) -> T:
        """A log-store write on its thread, waiting out a full or failing disk."""
        self._in_worker_now += 1
        try:
            return await self.disk.write("log", functools.partial(self._in_worker, fn, *args))
        finally:
            self._in_worker_now -= 1

    async def _in_worker(self, fn: Callable[..., T], *args: object) -> T:
        """Run blocking log-store work on the store's own thread."""
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    # -- operator verbs (coord.shell.services.AdminService) ------------------------------------

    def change_members(self, change: ConfigChange) -> int:
        index, _ = self.node.propose_config_change(change, now_ms())
        self._wake.set()
        return index

    def transfer_leadership(self, target: int) -> None:
        self.node.transfer_leadership(target, now_ms())
        self._wake.set()

    def force_leader(self) -> None:
        self.node.force_leader(now_ms())
        self._wake.set()

    def save_snapshot(self) -> AsyncGenerator[rpb.SnapshotChunk, None]:
        """The applied state for an operator, as snapshot chunks; Redirect unless this
        node leads, SaveBusy while another save streams from it."""
        if self.node.role is not Role.LEADER:
            raise core_errors.Redirect(self.node.leader_id)
        return self._saves.stream(self.node.term)

    # -- inputs from the transport --------------------------------------------------------

    def _receive(self, msg: Message) -> None:
        now = now_ms()
        if isinstance(msg, Append):
            self._time_heartbeat(msg, now)
        try:
            self.node.receive(msg, now)
        except core_errors.RemoteProtocolError as exc:
            log.warning(
                "rejected message %s: %s",
                type(msg).__name__,
                exc,
                extra={"event": "message_rejected"},
            )
        self._wake.set()

    def _time_heartbeat(self, msg: Append, now: int) -> None:
        """Feed chat_follower_heartbeat_gap_seconds: how long a leader left us waiting."""
        source = (msg.sender, msg.term)
        if self._last_append[0] == source:
            HEARTBEAT_GAP.observe((now - self._last_append[1]) / 1000)
        self._last_append = (source, now)

    def _admit(self, peer: int, msgs: list[Message]) -> str | None:
        """Membership check of a batch from ``peer``, by the core's rule (who may speak)."""
        if self.node.will_hear(peer, msgs):
            return None
        view = self.node.view
        epoch = view.epoch if view is not None else 0
        return f"node {peer} is not a member of this node's config (epoch {epoch})"

    def _peer_unreachable(self, peer: int) -> None:
        self.node.peer_unreachable(peer, now_ms())
        self._wake.set()

    # -- the driver -------------------------------------------------------------------------

    async def _tick(self) -> None:
        interval = max(0.005, min(0.025, self._settings.heartbeat_ms / 4000))
        while True:
            await asyncio.sleep(interval)
            self.node.tick(now_ms())
            self._wake.set()

    async def _drive(self) -> None:
        while True:
            await self._wake.wait()
            # Let every handler that is ready to run propose first: under load that
            # puts many ops into one Ready (one fsync, one message per follower).
            await asyncio.sleep(0)
            self._wake.clear()
            while self.node.has_ready():
                await self._handle(self.node.ready())
            self._advanced.set()

    async def _handle(self, ready: Ready) -> None:
        """Carry out one Ready in the order coord.core.ready prescribes."""
        early, later = split_messages(ready, leading=self.node.role is Role.LEADER)
        for to, msg in early:
            self.transport.send(to, msg)
        if ready.install_snapshot is not None:
            await self._write_log(self._store.install, ready.install_snapshot)
            await self._restore(ready.install_snapshot.index)
        if ready.must_sync():
            await self._save(ready)
            now = now_ms()
            self.node.synced(ready, now)  # a write slower than stall_ms counts as a stall
            if ready.entries:
                last = ready.entries[-1]
                self.node.persisted(last.index, last.term, now)
        for to, msg in later:
            self.transport.send(to, msg)
        for order in ready.snapshots:
            self._spawn_snapshot(order)
        if ready.committed:
            self._committed.put_nowait(list(ready.committed))
        for election in ready.elections:
            outcome = "election_won" if election.won else "election_lost"
            log.info("node %d: %s", self.id, election, extra={"event": outcome})
        if ready.soft_state is not None:
            self._publish(ready.soft_state)
        self._sync_members()

    def _publish(self, soft: SoftState) -> None:
        view = self._leader_view(soft.leader_id)
        for watcher in self._watchers:
            watcher.put_nowait(view)
        self.transport.follow(soft.leader_id if soft.leader_id != self.id else 0)
        event = (
            "leader_elected"
            if soft.role == Role.LEADER
            else "leader_known"
            if soft.leader_id
            else "leader_lost"
        )
        log.info(
            "role %s, leader %d, term %d",
            soft.role,
            soft.leader_id,
            soft.term,
            # The log stamps the term and role once the node hears of this change: this
            # line, which tells it, carries the new ones itself.
            extra={
                "event": event,
                "term": soft.term,
                "role": soft.role,
            },
        )

    def _sync_members(self) -> None:
        """Point the transport at the members of the current view, when it changed.

        A joining node holds no view until the leader's entries or snapshot reach it, and
        its answers must reach the leader before the leader sends a snapshot: until then
        it talks to the members its --cluster names.
        """
        view = self.node.view
        if view is None and self._join and self._synced_view is None:
            self._synced_view = (0, 0)
            self.transport.set_members(dict(self._members))
        elif view is not None and view.key != self._synced_view:
            self._synced_view = view.key
            self.transport.set_members(dict(view.config.members))

    async def hand_over(self) -> bool:
        """SIGTERM on a leader: transfer to an in-sync follower and wait (a lease at most).

        Returns whether leadership moved away from this node.
        """
        if self.node.role is not Role.LEADER or self.node.view is None:
            return False
        others = [i for i in sorted(self.node.view.config.isr) if i != self.id]
        if not others:
            return False
        with contextlib.suppress(core_errors.CoordError, TimeoutError):
            self.node.transfer_leadership(others[0], now_ms())
            self._wake.set()
            async with asyncio.timeout(self._settings.lease_ms / 1000):
                async for view in self.leader_changes():
                    if view is not None and view.leader_id != self.id:
                        return True
        return False

    # -- helpers ----------------------------------------------------------------------------

    def _address_of(self, node_id: int) -> str:
        view = self.node.view
        return view.config.address(node_id) if view and node_id else ""

    def _leader_view(self, leader_id: int) -> LeaderView | None:
        if not leader_id:
            return None
        return LeaderView(leader_id, self._address_of(leader_id), self.node.term)
