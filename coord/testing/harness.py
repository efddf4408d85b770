"""In-memory shells and a hand-driven cluster: how tests and the simulator drive nodes.

:class:`MemoryShell` does for one node what the gRPC + SQLite shell does: it
carries out each :class:`~coord.core.ready.Ready` in the documented order over a
:class:`~coord.core.log.MemoryStorage`, applies committed entries to a toy state
machine (a running checksum), and makes and installs snapshots of it.

:class:`CoreCluster` wires shells together on one fake clock for tests that drive
a scenario step by step: messages sent in one step arrive in the next, in
order; a crashed node refuses connections; a paused node's messages queue up
and are delivered before its first tick when it wakes, as the kernel would.
A message the core refuses (:class:`RemoteProtocolError`) is recorded in
:attr:`CoreCluster.refused`, as the real shell logs it, and the cluster goes on.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from coord.core.config import ClusterConfig
from coord.core.entry import Entry, EntryKind
from coord.core.errors import RemoteProtocolError
from coord.core.log import MemoryStorage, SnapshotMeta
from coord.core.messages import InstallSnapshot, Message
from coord.core.node import Node, Role
from coord.core.ready import Ready, SnapshotOrder
from coord.core.settings import Settings

NodeFactory = Callable[..., Node]
Outgoing = list[tuple[int, Message]]

TEST_SETTINGS = Settings(
    lease_ms=200, heartbeat_ms=20, election_wait_ms=50, stall_ms=50, max_drift=0.05
)


@dataclass(frozen=True, slots=True)
class StateCopy:
    """A snapshot's content: the toy state machine at ``index``."""

    index: int
    checksum: int


class MemoryShell:
    """One node's shell over memory, carrying out every Ready at once and in order.

    The state machine: with ``durable_apply`` (the default, for hand-driven
    tests) every applied entry is durable at once. Without it the shell models
    the real one (``chatnode/state.py``): applied state is durable only at a
    :meth:`checkpoint` (or a snapshot install), a restart goes back to the last
    checkpoint and the core replays the log from there, and :meth:`compact`
    never drops entries the durable state does not hold.

    :meth:`handle` does a whole Ready at once; a shell that lets time pass
    between the steps (the simulator) calls :meth:`persist`, :meth:`synced`
    and :meth:`apply` itself, in that order.
    """

    def __init__(
        self,
        node_id: int,
        settings: Settings,
        seed: int,
        now_ms: int,
        bootstrap: ClusterConfig | None,
        node_factory: NodeFactory = Node,
        *,
        durable_apply: bool = True,
    ) -> None:
        self.id = node_id
        self.settings = settings
        self.storage = MemoryStorage()
        self.applied_index = 0
        self.checksum = 0
        self.applied_config: Entry | None = None
        self.durable_apply = durable_apply
        # The state machine as last made durable: (applied index, checksum, config entry).
        self.checkpointed: tuple[int, int, Entry | None] = (0, 0, None)
        self.on_apply: Callable[[MemoryShell, Entry], None] | None = None
        self._staged: dict[int, StateCopy] = {}
        self._bootstrap = bootstrap
        self._seed = seed
        self._starts = 0
        self._node_factory = node_factory
        self.node = self._start(now_ms)

    def _start(self, now_ms: int) -> Node:
        self._starts += 1
        rng = random.Random(f"{self._seed}/{self.id}/{self._starts}")
        return self._node_factory(
            self.id,
            self.storage,
            self.settings,
            rng,
            now_ms,
            applied=self.applied_index,
            bootstrap=self._bootstrap,
        )

    def restart(self, now_ms: int) -> None:
        """A new process over what was durable: storage and the applied state.

        An initial member passes the initial config again: if its first write
        never made it to disk, it bootstraps like the first time.
        """
        self._staged.clear()
        if not self.durable_apply:
            self.applied_index, self.checksum, self.applied_config = self.checkpointed
        self.node = self._start(now_ms)

    @property
    def durable_index(self) -> int:
        """The applied index a restart would come back to."""
        return self.applied_index if self.durable_apply else self.checkpointed[0]

    def checkpoint(self) -> None:
        """Make the applied state durable (the real state machine does so now and then)."""
        self.checkpointed = (self.applied_index, self.checksum, self.applied_config)

    def handle(self, ready: Ready, now_ms: int) -> tuple[Outgoing, list[SnapshotOrder]]:
        """Carry out one Ready in the order :mod:`coord.core.ready` prescribes."""
        self.persist(ready)
        self.synced(ready, now_ms)
        self.apply(ready)
        return list(ready.messages), list(ready.snapshots)

    def persist(self, ready: Ready) -> None:
        """Steps 1 and 2 on disk: the snapshot install, then hard state and entries."""
        if ready.install_snapshot is not None:
            self._install(ready.install_snapshot)
        self.storage.save(ready.hard_state, None, ready.entries)

    def synced(self, ready: Ready, now_ms: int) -> None:
        """The fsync of :meth:`persist` returned: tell the core (before any later message
        leaves): ``Node.synced`` for every Ready that wrote, ``persisted`` for entries."""
        if ready.must_sync():
            self.node.synced(ready, now_ms)
        if ready.entries:
            last = ready.entries[-1]
            self.node.persisted(last.index, last.term, now_ms)

    def apply(self, ready: Ready) -> None:
        """Step 5: apply the committed entries."""
        for entry in ready.committed:
            self._apply(entry)

    def drain(self, now_ms: int) -> tuple[Outgoing, list[SnapshotOrder]]:
        """Handle Readys until the node has nothing more to say."""
        messages: Outgoing = []
        orders: list[SnapshotOrder] = []
        while self.node.has_ready():
            more, more_orders = self.handle(self.node.ready(), now_ms)
            messages += more
            orders += more_orders
        return messages, orders

    def _apply(self, entry: Entry) -> None:
        if entry.index != self.applied_index + 1:
            raise AssertionError(f"node {self.id} applies {entry.index} after {self.applied_index}")
        record = b"%d/%d/%d/" % (entry.index, entry.term, entry.kind) + entry.payload
        self.checksum = zlib.crc32(record, self.checksum)
        self.applied_index = entry.index
        if entry.kind is EntryKind.CONFIG:
            self.applied_config = entry
        if self.on_apply is not None:
            self.on_apply(self, entry)

    # -- snapshots -------------------------------------------------------------

    def snapshot_for(self, order: SnapshotOrder) -> tuple[InstallSnapshot, StateCopy] | None:
        """The leader's side: a copy of the applied state and the message announcing it."""
        if self.applied_config is None:
            return None
        index = self.applied_index
        msg = InstallSnapshot(
            order.term, self.id, index, self.storage.term(index), self.applied_config
        )
        return msg, StateCopy(index, self.checksum)

    def stage(self, copy: StateCopy) -> None:
        """The follower's side: the copy is on disk in a temp file, not yet in place."""
        self._staged[copy.index] = copy

    def _install(self, meta: SnapshotMeta) -> None:
        staged = self._staged.pop(meta.index, None)
        if staged is None:
            raise AssertionError(f"node {self.id} told to install a snapshot it has not staged")
        self.storage.save(None, meta, ())
        self.applied_index, self.checksum = staged.index, staged.checksum
        self.applied_config = meta.config
        self.checkpoint()  # a restored snapshot is durable state

    def compact(self, keep: int) -> None:
        """Drop log entries more than ``keep`` behind the durable applied index."""
        self.storage.compact(self.durable_index - keep)


class CoreCluster:
    """N protocol cores over memory shells on one fake clock, stepped by hand.

    For scenario tests of the core; ``chatnode/local_cluster.py`` has the cluster of real
    processes, which is why this one says what it holds. ``on_message(sender, to, msg)``
    sees every message as it is sent, before the links decide its fate (the scenario
    scripts print them).
    """

    def __init__(
        self,
        n: int = 3,
        *,
        settings: Settings = TEST_SETTINGS,
        min_insync: int = 1,
        seed: int = 0,
        node_factory: NodeFactory = Node,
        on_message: Callable[[int, int, Message], None] | None = None,
    ) -> None:
        self.settings = settings
        self.now = 0
        self._node_factory = node_factory
        self._on_message = on_message
        self.config = ClusterConfig.create(
            {i: f"node{i}:7000" for i in range(1, n + 1)}, min_insync=min_insync
        )
        self.shells = {
            i: MemoryShell(i, settings, seed, 0, self.config, node_factory)
            for i in self.config.member_ids
        }
        self.inbox: dict[int, list[tuple[Message, StateCopy | None]]] = {i: [] for i in self.shells}
        self.crashed: set[int] = set()
        self.paused: set[int] = set()
        self.cut: set[tuple[int, int]] = set()
        self.sent: list[tuple[int, int, Message]] = []  # (sender, to, message), cut or not
        self.refused: list[tuple[int, Message, str]] = []
        for i in self.shells:
            self.flush(i)

    def node(self, node_id: int) -> Node:
        return self.shells[node_id].node

    def add_node(self, node_id: int) -> None:
        """A new, empty process that will join once the leader adds it."""
        self.shells[node_id] = MemoryShell(
            node_id, self.settings, 0, self.now, None, self._node_factory
        )
        self.inbox[node_id] = []

    # -- time ------------------------------------------------------------------

    def step(self, ms: int | None = None) -> None:
        """Advance the clock; each running node gets its queued messages, then a tick."""
        self.now += self.settings.heartbeat_ms // 2 if ms is None else ms
        self._arrive()
        for node_id in sorted(self.shells):
            if node_id in self.crashed or node_id in self.paused:
                continue
            self.deliver(node_id)
            self.node(node_id).tick(self.now)
            self.flush(node_id)

    def _arrive(self) -> None:
        """Move messages that are due into inboxes; messages here arrive at once (a
        subclass with link delays holds them back until their time)."""

    def run(self, ms: int) -> None:
        end = self.now + ms
        while self.now < end:
            self.step()

    def run_until(self, done: Callable[[], bool], max_ms: int = 5000) -> bool:
        end = self.now + max_ms
        while not done():
            if self.now >= end:
                return False
            self.step()
        return True

    # -- messages --------------------------------------------------------------

    def deliver(self, node_id: int) -> None:
        queued, self.inbox[node_id] = self.inbox[node_id], []
        for msg, copy in queued:
            if copy is not None:
                self.shells[node_id].stage(copy)
            try:
                self.node(node_id).receive(msg, self.now)
            except RemoteProtocolError as exc:
                # What the gRPC shell does too: log it and go on (nothing was applied).
                self.refused.append((node_id, msg, str(exc)))
            self.flush(node_id)

    def flush(self, node_id: int) -> None:
        """Carry out the node's Readys and put what it sends on the wire."""
        shell = self.shells[node_id]
        messages, orders = shell.drain(self.now)
        for to, msg in messages:
            self._route(node_id, to, msg, None)
        for order in orders:
            made = shell.snapshot_for(order)
            if made is not None:
                self._route(node_id, order.to, made[0], made[1])

    def _route(self, sender: int, to: int, msg: Message, copy: StateCopy | None) -> None:
        self.sent.append((sender, to, msg))
        if self._on_message is not None:
            self._on_message(sender, to, msg)
        if (sender, to) in self.cut or to not in self.shells:
            return
        if to in self.crashed:
            self.node(sender).peer_unreachable(to, self.now)
            return
        self._enqueue(sender, to, msg, copy)

    def _enqueue(self, sender: int, to: int, msg: Message, copy: StateCopy | None) -> None:
        """A message on its way; here it arrives at the next step (a subclass with link
        delays holds it back)."""
        self.inbox[to].append((msg, copy))

    # -- faults ----------------------------------------------------------------

    def crash(self, node_id: int) -> None:
        """kill -9: only what the shell made durable survives; the node refuses connections."""
        self.crashed.add(node_id)
        self.inbox[node_id] = []

    def restart(self, node_id: int) -> None:
        self.crashed.discard(node_id)
        self.shells[node_id].restart(self.now)
        self.flush(node_id)

    def pause(self, node_id: int) -> None:
        """SIGSTOP: the clock runs on, the node processes nothing, messages queue up."""
        self.paused.add(node_id)

    def resume(self, node_id: int) -> None:
        self.paused.discard(node_id)

    def isolate(self, node_id: int) -> None:
        """Cut every link to and from the node (messages vanish, nothing is refused)."""
        for other in self.shells:
            self.cut |= {(node_id, other), (other, node_id)}

    def heal(self) -> None:
        self.cut.clear()

    # -- queries ---------------------------------------------------------------

    def leaders(self) -> list[int]:
        return [
            i
            for i, shell in sorted(self.shells.items())
            if i not in self.crashed and shell.node.role is Role.LEADER
        ]

    def leader(self) -> int:
        leaders = self.leaders()
        if len(leaders) != 1:
            raise AssertionError(f"expected one leader, found {leaders}")
        return leaders[0]

    def elect(self, max_ms: int = 5000) -> int:
        if not self.run_until(lambda: len(self.leaders()) == 1, max_ms):
            raise AssertionError(f"no single leader after {max_ms} ms: {self.leaders()}")
        return self.leader()

    def propose(self, payload: bytes) -> tuple[int, int]:
        leader = self.leader()
        result = self.node(leader).propose(payload, self.now)
        self.flush(leader)
        return result

    def committed_everywhere(self, index: int, nodes: list[int] | None = None) -> bool:
        ids = nodes if nodes is not None else [i for i in self.shells if i not in self.crashed]
        return all(self.shells[i].applied_index >= index for i in ids)
