"""Deterministic simulation of a whole cluster of protocol cores (coord/PROTOCOL.md §15).

One seed is one schedule: N nodes whose clocks drift (each runs at its own
rate, from its own origin), a network that delays and reorders every message
(and in quorum mode drops messages and partitions nodes), crashes that keep
only what was made durable, restarts, pauses (the clock runs on, the node does
nothing, messages queue for it), and a client proposing all along. Every step
is checked: one leader per term; no index ever applied with two different
entries or states, so no acknowledged entry is lost or changed; and, once the
faults stop and everything is back, a new proposal must commit and every node
must apply it (liveness, and every node catching up), where the model owes
it: message delays up to half a lease.

The simulated shell is the production one (coord/shell/driver.py) with time in
it: each node carries out one Ready at a time, taking the next only once the
previous is done; a leader's Appends leave before its own fsync
(coord/core/ready_order.py decides, for both shells); everything else leaves only
once the fsync is done, which takes up to ``--fsync-ms`` and, with
``--stall-rate``, now and then stalls for 2 to 5 leases while the node's ticks
go on (its outbox fills with heartbeats stamped when the core made them). A
crash during an fsync keeps the write or not, at random. The state machine is
durable only at its checkpoints: a crash loses what it applied since, and the
restarted node replays the log from there. ``--disk-faults``: a log write
fails with ENOSPC (the disk stays full for a while; nothing of that Ready is
written or sent, the same Ready is retried once space returns, later Readys
wait, ticks go on) or EIO (the process exits, as PostgreSQL does on a failed
fsync: after EIO the page cache cannot be trusted; the write may or may not be
on disk); a full disk also makes checkpoints of the state fail.

Fault schedules stay inside each mode's model. Fail-stop: at most N-1 nodes
crashed at once by the scheduler (EIO may take the last one down too), no
partitions, no loss; pauses of any length (a paused node is as good as dead to
the others after its lease). Quorum: any crashes, pauses, partitions and
losses. Message delays beyond half a lease are checked for safety only.

    python -m coord.sim --mode failstop --schedules 100000
    python -m coord.sim --mode quorum --seed 1234 --trace
    python -m coord.sim --mode failstop --membership --schedules 2000
    python -m coord.sim --mode failstop --max-delay-ms 100 --fsync-ms 20 --disk-faults
    python -m coord.sim sweep --seeds 300        # the whole grid (coord/testing/sim_sweep.py)
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from coord.core.config import AddMember, ClusterConfig, ConfigChange, RemoveMember
from coord.core.entry import Entry, EntryKind
from coord.core.errors import CoordError, LocalProtocolError, Redirect
from coord.core.messages import (
    Append,
    AppendReply,
    InstallSnapshot,
    Message,
    VoteReply,
    VoteRequest,
)
from coord.core.node import Node, Role
from coord.core.ready import Ready, SoftState
from coord.core.ready_order import Outgoing, split_messages
from coord.core.settings import Settings
from coord.testing.harness import MemoryShell, NodeFactory, StateCopy

SIM_SETTINGS = Settings(
    lease_ms=200, heartbeat_ms=20, election_wait_ms=50, stall_ms=50, max_drift=0.05
)
MODES = ("failstop", "quorum")


class Violation(Exception):
    """A safety or liveness property failed: a bug in the core (or in the simulator)."""


SplitRule = Callable[[Ready, bool], tuple[Outgoing, Outgoing]]


@dataclass(frozen=True, slots=True)
class Schedule:
    """The shape of one run; the seed decides everything else.

    With ``membership`` the leader also removes members and adds removed ones
    back, racing the crashes; a removed node is left running (it must learn it
    was removed and never lead), and liveness is owed by the final members.

    ``fsync_ms`` bounds an ordinary fsync; while the faults last, each fsync
    stalls for 2 to 5 leases with probability ``stall_rate`` (and a write fails
    with ``disk_faults``). ``checkpoint_rate`` is the chance that the state
    machine checkpoints after applying a batch.
    """

    mode: str
    nodes: int = 3
    fault_ms: int = 1200
    heal_ms: int = 4000
    tick_ms: int = 10
    max_delay_ms: int = 20
    drop_rate: float = 0.05
    clock_drift: float = 0.02
    propose_every_ms: int = 25
    unflushed_ms: int = 3
    membership: bool = False
    fsync_ms: int = 2
    stall_rate: float = 0.0
    disk_faults: bool = False
    enospc_rate: float = 0.03
    eio_rate: float = 0.01
    checkpoint_rate: float = 0.2
    settings: Settings = SIM_SETTINGS

    @property
    def min_insync(self) -> int:
        return self.nodes // 2 + 1 if self.mode == "quorum" else 1

    @property
    def liveness_owed(self) -> bool:
        """The model promises progress after the heal only for delays up to half a lease."""
        return self.max_delay_ms <= self.settings.lease_ms // 2

    def flags(self) -> str:
        """The command-line flags that give this schedule (for replay commands)."""
        parts = [f"--mode {self.mode}"]
        if self.nodes != 3:
            parts.append(f"--nodes {self.nodes}")
        if self.membership:
            parts.append("--membership")
        if self.max_delay_ms != 20:
            parts.append(f"--max-delay-ms {self.max_delay_ms}")
        if self.fsync_ms != 2:
            parts.append(f"--fsync-ms {self.fsync_ms}")
        if self.stall_rate != (DEFAULT_STALL_RATE if self.fsync_ms != 2 else 0.0):
            parts.append(f"--stall-rate {self.stall_rate:g}")
        if self.disk_faults:
            parts.append("--disk-faults")
        return " ".join(parts)

    def describe(self) -> str:
        fsync = f"fsync<={self.fsync_ms}ms" + (
            f" stalls {self.stall_rate:g}" if self.stall_rate else ""
        )
        extra = " membership" if self.membership else ""
        extra += " disk-faults" if self.disk_faults else ""
        owed = "" if self.liveness_owed else ", safety only"
        return (
            f"{self.mode}, {self.nodes} nodes, delay<={self.max_delay_ms}ms, {fsync}{extra}{owed}"
        )


DEFAULT_STALL_RATE = 0.05


@dataclass(slots=True)
class SimNode:
    """What the simulator knows of one node besides its shell.

    ``busy`` while the shell carries out a Ready (``inflight``: the Ready, the
    messages that wait for its fsync, whether its write reached the disk);
    ``synced_while_paused`` when that fsync returned while the process was
    stopped.
    """

    shell: MemoryShell
    rate: float
    origin: int
    incarnation: int = 0
    ticker: int = 0
    crashed: bool = False
    crashed_at: int = -1
    trap: str = ""
    paused: bool = False
    held: list[tuple[Message, StateCopy | None]] = field(default_factory=list)
    busy: bool = False
    inflight: tuple[Ready, Outgoing] | None = None
    written: bool = False
    synced_while_paused: bool = False
    disk_full_until: int = -1


@dataclass(frozen=True, slots=True)
class ShellBugs:
    """Planted shell bugs, to prove the simulator catches them (tests only)."""

    ignore_write_errors: bool = False  # ENOSPC: log it, carry on as if written
    compact_past_checkpoint: bool = False  # drop entries the durable state lacks


@dataclass(frozen=True, slots=True)
class Result:
    seed: int
    mode: str
    ok: bool
    error: str
    trace: tuple[str, ...]
    acked: int
    sim_ms: int
    membership: bool = False
    schedule: Schedule | None = None
    liveness_checked: bool = True
    terms_led: int = 0  # terms in which some node led: what the run exercised
    stalls: int = 0  # fsync stalls and disk-full spells


class Simulator:
    """One schedule, run event by event on a simulated real-time clock."""

    def __init__(
        self,
        seed: int,
        schedule: Schedule,
        *,
        node_factory: NodeFactory = Node,
        echo: Callable[[str], None] | None = None,
        split: SplitRule = split_messages,
        bugs: ShellBugs = ShellBugs(),
    ) -> None:
        self.seed = seed
        self.schedule = schedule
        self.rng = random.Random(seed)
        self.real = 0
        self._events: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = 0
        self._echo = echo
        self._split = split
        self._bugs = bugs
        self.trace: list[str] = []
        config = ClusterConfig.create(
            {i: f"n{i}" for i in range(1, schedule.nodes + 1)}, min_insync=schedule.min_insync
        )
        self.nodes: dict[int, SimNode] = {}
        for node_id in config.member_ids:
            drift = schedule.clock_drift
            sim = SimNode(
                shell=None,  # type: ignore[arg-type]
                rate=self.rng.uniform(1 - drift, 1 + drift),
                origin=self.rng.randrange(10**6),
            )
            self.nodes[node_id] = sim
            sim.shell = MemoryShell(
                node_id,
                schedule.settings,
                seed,
                self.local(node_id),
                config,
                node_factory,
                durable_apply=False,
            )
            sim.shell.on_apply = self._on_apply
        self.faulty = True
        self.cut: set[tuple[int, int]] = set()
        self.leader_of_term: dict[int, int] = {}
        self.applied: dict[int, tuple[int, EntryKind, bytes, int]] = {}
        self.proposed: dict[tuple[int, int, int], bytes] = {}
        self.acked: dict[int, bytes] = {}
        self.goal: tuple[int, int, int] | None = None
        self._proposals = 0
        self.stalls = 0
        self.link_delay = self._link_delays()

    def _link_delays(self) -> dict[tuple[int, int], int]:
        """Each directed link's delay bound for this run.

        Half the runs delay every message up to ``max_delay_ms``; the other half
        give each link its own bound, fast (20 ms) or slow (the maximum), as when
        two followers' link to each other is slow but both reach the leader fast
        (as real processes on three hosts saw). Both stay within the schedule's bound.
        """
        top = self.schedule.max_delay_ms
        ids = list(self.nodes)
        links = [(a, b) for a in ids for b in ids if a != b]
        if top <= 20 or self.rng.random() < 0.5:
            return dict.fromkeys(links, top)
        bounds = {link: self.rng.choice((20, top)) for link in links}
        slow = [f"{a}>{b}" for (a, b), bound in bounds.items() if bound == top]
        self.note(0, f"SLOW LINKS (up to {top} ms, others 20 ms): {' '.join(slow) or 'none'}")
        return bounds

    # -- clocks and events -----------------------------------------------------

    def local(self, node_id: int) -> int:
        """The node's monotonic clock: its own origin and rate, never compared with others."""
        sim = self.nodes[node_id]
        return sim.origin + int(self.real * sim.rate)

    def at(self, delay: int, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._events, (self.real + delay, self._seq, action))

    def note(self, node_id: int, text: str) -> None:
        line = event_line(self.real, node_id, text)
        self.trace.append(line)
        if self._echo is not None:
            self._echo(line)

    # -- running -----------------------------------------------------------------

    def run(self) -> Result:
        try:
            self._run()
        except (Violation, CoordError, AssertionError) as exc:
            return self._result(False, f"{type(exc).__name__}: {exc}")
        return self._result(True, "")

    def _result(self, ok: bool, error: str) -> Result:
        schedule = self.schedule
        return Result(
            self.seed,
            schedule.mode,
            ok,
            error,
            tuple(self.trace),
            len(self.acked),
            self.real,
            schedule.membership,
            schedule,
            schedule.liveness_owed,
            len(self.leader_of_term),
            self.stalls,
        )

    def _run(self) -> None:
        for node_id in self.nodes:
            self._collect(node_id)
            self._start_ticking(node_id, self.rng.randrange(self.schedule.tick_ms))
        self.at(self.rng.randrange(100), self._fault)
        self.at(self.schedule.propose_every_ms, self._propose)
        self.at(self.schedule.fault_ms, self._heal)
        deadline = self.schedule.fault_ms + self.schedule.heal_ms
        while self._events and not self._done():
            when, _, action = heapq.heappop(self._events)
            if when > deadline:
                break
            self.real = when
            action()
        if not self._done() and self.schedule.liveness_owed:
            raise Violation(
                f"no progress by {deadline} ms, {self.real - self.schedule.fault_ms} "
                f"ms after the faults stopped: {self._summary()}"
            )

    def _done(self) -> bool:
        """Liveness reached: a proposal made after the heal is applied by every node."""
        if self.goal is None:
            return False
        index = self.goal[1]
        if index not in self.acked:
            return False
        members = self._members(self.goal[0])
        return all(self.nodes[i].shell.applied_index >= index for i in members)

    def _members(self, node_id: int) -> tuple[int, ...]:
        """The members of that node's view: who owes progress (a removed node does not)."""
        view = self.nodes[node_id].shell.node.view
        return view.config.member_ids if view is not None else tuple(self.nodes)

    def _summary(self) -> str:
        parts = []
        for node_id, sim in self.nodes.items():
            node = sim.shell.node
            state = "crashed" if sim.crashed else "paused" if sim.paused else node.role.value
            parts.append(
                f"n{node_id} {state} t{node.term} last {node.log.last_index()} commit "
                f"{node.commit} applied {sim.shell.applied_index} isr "
                f"{sorted(node.view.config.isr) if node.view else '-'} restarted {node.restarted}"
            )
        return "; ".join(parts)

    # -- the node's shell: inputs, durable writes, sends ---------------------------

    def _start_ticking(self, node_id: int, delay: int) -> None:
        """(Re)start the node's periodic tick; an older ticker stops by itself."""
        sim = self.nodes[node_id]
        sim.ticker += 1
        self.at(delay, self._ticker(node_id, sim.ticker))

    def _ticker(self, node_id: int, generation: int) -> Callable[[], None]:
        def tick() -> None:
            sim = self.nodes[node_id]
            if sim.ticker != generation or sim.crashed or sim.paused:
                return
            self._input(node_id, lambda node, now: node.tick(now))
            self.at(self.schedule.tick_ms, tick)

        return tick

    def _input(self, node_id: int, feed: Callable[[Node, int], None]) -> None:
        node = self.nodes[node_id].shell.node
        feed(node, self.local(node_id))
        self._check_leader(node_id)
        self._collect(node_id)

    def _collect(self, node_id: int) -> None:
        """The driver loop (``ReplicatedCoordinator._drive``): one Ready at a time, in order.

        The next Ready is taken only once the previous one is done, as in
        production: what the core produces meanwhile (heartbeats from ticks,
        replies) waits in it and leaves with a later Ready.
        """
        sim = self.nodes[node_id]
        while not (sim.busy or sim.paused or sim.crashed) and sim.shell.node.has_ready():
            node = sim.shell.node
            ready = node.ready()
            early, later = self._split(ready, node.role is Role.LEADER)
            sim.busy, sim.inflight, sim.written = True, (ready, later), False
            for to, msg in early:
                self._send(node_id, to, msg, None)
            if ready.must_sync() or ready.install_snapshot is not None:
                self.at(self._fsync_ms(node_id), self._fsynced(node_id, sim.incarnation))
                return
            self._finish(node_id)

    def _fsync_ms(self, node_id: int) -> int:
        schedule = self.schedule
        if self.faulty and schedule.stall_rate and self.rng.random() < schedule.stall_rate:
            lease = schedule.settings.lease_ms
            stall = self.rng.randint(2 * lease, 5 * lease)
            self.stalls += 1
            self.note(node_id, f"FSYNC STALL {stall} ms")
            return stall
        return self.rng.randint(0, schedule.fsync_ms)

    def _fsynced(self, node_id: int, incarnation: int) -> Callable[[], None]:
        def done() -> None:
            sim = self.nodes[node_id]
            if sim.incarnation != incarnation or sim.inflight is None:
                return
            if sim.paused:
                sim.synced_while_paused = True
                return
            self._finish(node_id)

        return done

    def _disk_error(self, node_id: int, ready: Ready) -> str:
        """The disk fault this Ready's write meets: "", "ENOSPC" or "EIO"."""
        sim = self.nodes[node_id]
        schedule = self.schedule
        if not schedule.disk_faults or not (ready.must_sync() or ready.install_snapshot):
            return ""
        if self.real < sim.disk_full_until:
            return "ENOSPC"
        if not self.faulty:
            return ""
        if self.rng.random() < schedule.enospc_rate:
            lease = schedule.settings.lease_ms
            sim.disk_full_until = self.real + self.rng.randint(lease // 4, 3 * lease)
            self.stalls += 1
            self.note(node_id, f"DISK FULL until {sim.disk_full_until}")
            return "ENOSPC"
        return "EIO" if self.rng.random() < schedule.eio_rate else ""

    def _finish(self, node_id: int) -> None:
        """The rest of ``ReplicatedCoordinator._handle`` once the fsync returned."""
        sim = self.nodes[node_id]
        assert sim.inflight is not None
        ready, later = sim.inflight
        error = self._disk_error(node_id, ready)
        if error == "EIO":
            self._crash(node_id, "EIO on the log write: the process exits")
            return
        if error == "ENOSPC" and not self._bugs.ignore_write_errors:
            # Nothing was written (the transaction rolled back): retry the same Ready
            # once there is space again; nothing of it leaves meanwhile.
            wait = sim.disk_full_until - self.real + self.rng.randint(0, self.schedule.fsync_ms)
            self.at(wait, self._fsynced(node_id, sim.incarnation))
            return
        if not error:  # with the planted bug, a failed write is lost and the shell goes on
            sim.shell.persist(ready)
        sim.written = True
        if sim.trap == "write" and ready.must_sync():
            self._crash(node_id, "after a write, before sending")
            return
        sim.shell.synced(ready, self.local(node_id))
        for election in ready.elections:
            self.note(node_id, str(election))
        if ready.soft_state is not None:
            self.note(node_id, describe_soft(ready.soft_state))
        for to, msg in later:
            self._send(node_id, to, msg, None)
        for order in ready.snapshots:
            made = sim.shell.snapshot_for(order)
            if made is not None:
                self.note(node_id, f"snapshot to n{order.to} at {made[1].index}")
                self._send(node_id, order.to, *made)
        acked = len(self.acked)
        sim.shell.apply(ready)
        if ready.committed and self.rng.random() < self.schedule.checkpoint_rate:
            if self.real < sim.disk_full_until:
                self.note(node_id, "checkpoint of the state failed: ENOSPC")
            else:
                sim.shell.checkpoint()
        if sim.trap == "ack" and len(self.acked) > acked:
            self._crash(node_id, "right after acknowledging")
            return
        if self.rng.random() < 0.1:
            keep = self.rng.randrange(8)
            if self._bugs.compact_past_checkpoint:
                sim.shell.storage.compact(sim.shell.applied_index - keep)
            else:
                sim.shell.compact(keep)
        sim.busy, sim.inflight = False, None
        self._check_leader(node_id)
        self._collect(node_id)

    def _send(self, sender: int, to: int, msg: Message, copy: StateCopy | None) -> None:
        target = self.nodes.get(to)
        if target is None or (sender, to) in self.cut:
            return
        if target.crashed:
            self._input(sender, lambda node, now: node.peer_unreachable(to, now))
            return
        if (
            self.faulty
            and self.schedule.mode == "quorum"
            and self.rng.random() < (self.schedule.drop_rate)
        ):
            return
        incarnation = target.incarnation
        source, sent = self.nodes[sender], self.real

        def arrive() -> None:
            if target.incarnation != incarnation or target.crashed:
                return
            if sent <= source.crashed_at < sent + self.schedule.unflushed_ms:
                return  # still in the sender's buffers when it was killed
            if target.paused:
                target.held.append((msg, copy))
                return
            self._deliver(to, msg, copy)

        self.at(self.rng.randint(1, self.link_delay[sender, to]), arrive)

    def _deliver(self, to: int, msg: Message, copy: StateCopy | None) -> None:
        if copy is not None:
            self.nodes[to].shell.stage(copy)
        if self._echo is not None:
            self.note(to, f"<- {describe(msg)}")
        self._input(to, lambda node, now: node.receive(msg, now))

    # -- faults ------------------------------------------------------------------

    def _fault(self) -> None:
        if not self.faulty:
            return
        running = [i for i, s in self.nodes.items() if not s.crashed and not s.paused]
        crashed = [i for i, s in self.nodes.items() if s.crashed]
        if self.schedule.membership and self.rng.random() < 0.15:
            self._change_membership()
            self.at(self.rng.randrange(40, 200), self._fault)
            return
        choice = self.rng.random()
        limit = len(self.nodes) - 1
        if choice < 0.25 and running and len(crashed) < limit:
            self._crash(self.rng.choice(running))
        elif choice < 0.5 and crashed:
            self._restart(self.rng.choice(crashed))
        elif choice < 0.7 and running:
            node_id = self.rng.choice(running)
            lease = self.schedule.settings.lease_ms
            self._pause(node_id, self.rng.choice((self.rng.randrange(lease), 3 * lease // 2)))
        elif choice < 0.75 and running and len(crashed) < limit:
            self._arm_trap()
        elif choice < 0.8:
            self._transfer()
        elif choice < 0.9 and self.schedule.mode == "quorum":
            self._partition()
        elif self.cut:
            self.note(0, "network healed")
            self.cut.clear()
        self.at(self.rng.randrange(40, 200), self._fault)

    def _arm_trap(self) -> None:
        """Crash a node at a bad moment: after its next write or its next acknowledgement."""
        leaders = [i for i, s in self.nodes.items() if s.shell.node.role is Role.LEADER]
        running = [i for i, s in self.nodes.items() if not s.crashed and not s.paused]
        node_id = self.rng.choice([i for i in leaders if i in running] or running)
        self.nodes[node_id].trap = self.rng.choice(("write", "ack"))
        self.note(node_id, f"TRAP crash after next {self.nodes[node_id].trap}")

    def _crash(self, node_id: int, why: str = "") -> None:
        sim = self.nodes[node_id]
        self.note(node_id, f"CRASH {why}".rstrip())
        if sim.inflight is not None and not sim.written and self.real >= sim.disk_full_until:
            ready = sim.inflight[0]
            if (ready.must_sync() or ready.install_snapshot) and self.rng.random() < 0.5:
                # Killed during the fsync, which completed all the same: durable, unreported.
                self.note(node_id, "its last write reached the disk")
                sim.shell.persist(ready)
        sim.crashed, sim.paused, sim.trap = True, False, ""
        sim.busy, sim.inflight, sim.written, sim.synced_while_paused = False, None, False, False
        sim.crashed_at = self.real
        sim.incarnation += 1
        sim.held.clear()

    def _restart(self, node_id: int) -> None:
        sim = self.nodes[node_id]
        self.note(node_id, "RESTART")
        sim.crashed = False
        sim.incarnation += 1
        sim.shell.restart(self.local(node_id))
        self._collect(node_id)
        self._start_ticking(node_id, self.schedule.tick_ms)

    def _pause(self, node_id: int, duration: int) -> None:
        sim = self.nodes[node_id]
        self.note(node_id, f"PAUSE {duration} ms")
        sim.paused = True
        incarnation = sim.incarnation
        self.at(duration, lambda: self._resume(node_id, incarnation))

    def _resume(self, node_id: int, incarnation: int) -> None:
        sim = self.nodes[node_id]
        if sim.incarnation != incarnation or not sim.paused:
            return
        self.note(node_id, "RESUME")
        sim.paused = False
        if sim.synced_while_paused:
            sim.synced_while_paused = False
            self._finish(node_id)
            if sim.crashed:
                return
        held, sim.held = sim.held, []
        for msg, copy in held:
            if sim.crashed:
                return
            self._deliver(node_id, msg, copy)
        self._collect(node_id)
        self._start_ticking(node_id, 0)

    def _transfer(self) -> None:
        for node_id, sim in self.nodes.items():
            node = sim.shell.node
            if node.role is Role.LEADER and not sim.crashed and not sim.paused:
                targets = sorted(node.view.config.isr - {node_id}) if node.view else []
                if targets:
                    target = self.rng.choice(targets)
                    self.note(node_id, f"TRANSFER to n{target}")
                    with contextlib.suppress(Redirect, LocalProtocolError):
                        self._input(
                            node_id, lambda n, now, to=target: n.transfer_leadership(to, now)
                        )
                return

    def _change_membership(self) -> None:
        """The leader removes a follower, or adds a removed node back (one change at a time)."""
        for node_id, sim in self.nodes.items():
            node = sim.shell.node
            if node.role is not Role.LEADER or sim.crashed or sim.paused or node.view is None:
                continue
            members = node.view.config.member_ids
            outside = [i for i in self.nodes if i not in members]
            change: ConfigChange
            if outside and (len(members) < 3 or self.rng.random() < 0.5):
                target = self.rng.choice(outside)
                change = AddMember(target, f"n{target}")
            else:
                target = self.rng.choice([i for i in members if i != node_id])
                change = RemoveMember(target)
            self.note(node_id, f"MEMBERSHIP {type(change).__name__} n{target}")
            with contextlib.suppress(Redirect, LocalProtocolError):
                self._input(node_id, lambda n, now, c=change: n.propose_config_change(c, now))
            return

    def _partition(self) -> None:
        """Split the nodes in two, or cut one link (one way or both): messages vanish."""
        ids = list(self.nodes)
        self.rng.shuffle(ids)
        if self.rng.random() < 0.5:
            side = set(ids[: self.rng.randint(1, len(ids) - 1)])
            self.note(0, f"PARTITION {sorted(side)} | {sorted(set(ids) - side)}")
            self.cut = {(a, b) for a in ids for b in ids if (a in side) != (b in side)}
            return
        a, b = ids[:2]
        self.cut.add((a, b))
        if self.rng.random() < 0.5:
            self.cut.add((b, a))
        self.note(0, f"CUT {sorted(self.cut)}")

    def _heal(self) -> None:
        """Faults stop; everyone comes back. From here on progress is owed."""
        self.faulty = False
        self.cut.clear()
        self.note(0, "HEAL")
        for node_id, sim in self.nodes.items():
            sim.trap = ""
            if sim.crashed:
                self._restart(node_id)
            elif sim.paused:
                self._resume(node_id, sim.incarnation)

    # -- the client ----------------------------------------------------------------

    def _propose(self) -> None:
        for node_id, sim in self.nodes.items():
            node = sim.shell.node
            if node.role is not Role.LEADER or sim.crashed or sim.paused:
                continue
            self._proposals += 1
            payload = b"op%d" % self._proposals
            try:
                index, term = node.propose(payload, self.local(node_id))
            except Redirect:
                continue
            self.proposed[(node_id, index, term)] = payload
            if not self.faulty and self.goal is None:
                self.goal = (node_id, index, term)
            self._collect(node_id)
        if self.goal is not None and not self._goal_alive():
            self.goal = None
        self.at(self.schedule.propose_every_ms, self._propose)

    def _goal_alive(self) -> bool:
        """The liveness target still stands: its leader has not moved on."""
        assert self.goal is not None
        node_id, index, term = self.goal
        node = self.nodes[node_id].shell.node
        return index in self.acked or (node.role is Role.LEADER and node.term == term)

    # -- checks --------------------------------------------------------------------

    def _check_leader(self, node_id: int) -> None:
        """One leader per term; no older leader still holds a lease (its reads would be stale)."""
        node = self.nodes[node_id].shell.node
        if node.role is not Role.LEADER:
            return
        first = self.leader_of_term.setdefault(node.term, node_id)
        if first != node_id:
            raise Violation(f"two leaders in term {node.term}: n{first} and n{node_id}")
        for other_id, other in self.nodes.items():
            old = other.shell.node
            if other.crashed or old.role is not Role.LEADER or old.term >= node.term:
                continue
            if old.has_lease(self.local(other_id)):
                raise Violation(
                    f"n{other_id} still holds its term {old.term} lease while n{node_id} "
                    f"leads term {node.term}"
                )

    def _on_apply(self, shell: MemoryShell, entry: Entry) -> None:
        """Every node applies the same entry and reaches the same state at each index."""
        seen = (entry.term, entry.kind, entry.payload, shell.checksum)
        first = self.applied.setdefault(entry.index, seen)
        if first != seen:
            raise Violation(
                f"n{shell.id} applied {entry.index} as {seen[:3]}, another node as {first[:3]}"
            )
        payload = self.proposed.get((shell.id, entry.index, entry.term))
        if payload is not None and entry.kind is EntryKind.OP:
            self.acked[entry.index] = payload
        if self._echo is not None:
            self.note(shell.id, describe_apply(entry))


def event_line(ms: int, node_id: int, text: str) -> str:
    """One event of a trace: the time, the node, what happened there."""
    return f"{ms:6d} n{node_id} {text}"


def describe_soft(soft: SoftState) -> str:
    """A role change, for traces."""
    return f"{soft.role} t{soft.term} leader {soft.leader_id}"


def describe_apply(entry: Entry) -> str:
    """An entry applied, for traces."""
    return f"apply {entry.index} t{entry.term} {entry.kind.name}"


def describe(msg: Message) -> str:
    """One short line per message, for traces."""
    match msg:
        case Append():
            span = f" [{msg.entries[0].index}..{msg.entries[-1].index}]" if msg.entries else ""
            return (
                f"Append t{msg.term} from n{msg.sender} prev {msg.prev_index}/{msg.prev_term}"
                f"{span} commit {msg.commit} isr {list(msg.isr)}@{msg.epoch}"
            )
        case AppendReply():
            verdict = f"ok {msg.match_index}" if msg.success else f"no {msg.reject_index}"
            return f"AppendReply t{msg.term} from n{msg.sender} {verdict}"
        case VoteRequest():
            kind = "PreVote" if msg.pre_vote else "Vote"
            return (
                f"{kind} t{msg.term} from n{msg.sender} log {msg.last_log_index}/"
                f"{msg.last_log_term} epoch {msg.epoch}"
            )
        case VoteReply():
            return (
                f"VoteReply t{msg.term} from n{msg.sender} granted {msg.granted} epoch "
                f"{msg.epoch} isr {list(msg.isr)} restarted {msg.restarted} live-leader "
                f"{msg.has_live_leader}"
            )
        case InstallSnapshot():
            return f"InstallSnapshot t{msg.term} from n{msg.sender} at {msg.index}"
        case _:
            return f"{type(msg).__name__} t{msg.term} from n{msg.sender}"


def replay_command(result: Result, nodes: int | None = None) -> str:
    """The command that runs this seed again, printing every event."""
    schedule = result.schedule or Schedule(
        mode=result.mode, nodes=nodes or 3, membership=result.membership
    )
    return f"python -m coord.sim {schedule.flags()} --seed {result.seed} --trace"


def report(result: Result, nodes: int | None = None, *, trace: bool = True) -> str:
    """A failing seed: the error, its whole trace (unless ``trace`` is off), the replay."""
    schedule = result.schedule
    where = schedule.describe() if schedule else f"{result.mode}, {nodes} nodes"
    lines = [f"seed {result.seed} ({where}) FAILED: {result.error}"]
    if trace:
        lines += [f"trace ({len(result.trace)} events):", *("  " + x for x in result.trace)]
    lines.append(f"replay: {replay_command(result, nodes)}")
    return "\n".join(lines)


def run_seeds(
    seeds: range,
    schedule: Schedule,
    node_factory: NodeFactory = Node,
    *,
    split: SplitRule = split_messages,
    bugs: ShellBugs = ShellBugs(),
) -> Iterator[Result]:
    for seed in seeds:
        yield Simulator(seed, schedule, node_factory=node_factory, split=split, bugs=bugs).run()


def add_schedule_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that shape a schedule (shared with ``python -m coord.sim sweep``)."""
    parser.add_argument(
        "--max-delay-ms", type=int, default=20, help="message delay bound (default 20)"
    )
    parser.add_argument(
        "--fsync-ms",
        type=int,
        default=2,
        help="fsync latency bound; other than 2 it also turns on stalls of 2-5 leases",
    )
    parser.add_argument(
        "--stall-rate",
        type=float,
        help=f"chance that an fsync stalls (default {DEFAULT_STALL_RATE} with --fsync-ms, else 0)",
    )
    parser.add_argument(
        "--disk-faults", action="store_true", help="log writes fail with ENOSPC or EIO"
    )


def schedule_from(args: argparse.Namespace) -> Schedule:
    stall_rate = args.stall_rate
    if stall_rate is None:
        stall_rate = DEFAULT_STALL_RATE if args.fsync_ms != 2 else 0.0
    return Schedule(
        mode=args.mode,
        nodes=args.nodes,
        membership=args.membership,
        max_delay_ms=args.max_delay_ms,
        fsync_ms=args.fsync_ms,
        stall_rate=stall_rate,
        disk_faults=args.disk_faults,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coord.sim", description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument(
        "--membership", action="store_true", help="remove and re-add members amid the faults"
    )
    add_schedule_arguments(parser)
    parser.add_argument("--seed", type=int, help="run this one seed")
    parser.add_argument(
        "--trace", action="store_true", help="print every event of --seed; full traces of failures"
    )
    parser.add_argument("--schedules", type=int, default=1000, help="how many seeds to run")
    parser.add_argument("--first", type=int, default=0, help="the first seed to run")
    args = parser.parse_args(argv)
    schedule = schedule_from(args)
    if args.seed is not None:
        echo = print if args.trace else None
        result = Simulator(args.seed, schedule, echo=echo).run()
        # With --trace every event was printed as it happened; else print the recorded ones.
        print(
            f"seed {args.seed}: ok, {result.acked} acknowledged"
            if result.ok
            else report(result, trace=not args.trace)
        )
        return 0 if result.ok else 1
    started = time.monotonic()
    failures = 0
    seeds = range(args.first, args.first + args.schedules)
    print(f"schedule: {schedule.describe()}", file=sys.stderr)
    for count, result in enumerate(run_seeds(seeds, schedule), 1):
        if not result.ok:
            failures += 1
            print(report(result, trace=args.trace), file=sys.stderr)
        if count % 1000 == 0:
            rate = count / (time.monotonic() - started)
            print(f"{count} schedules, {failures} failed, {rate:.0f}/s", file=sys.stderr)
    elapsed = time.monotonic() - started
    print(
        f"{args.schedules} schedules ({schedule.describe()}): {failures} failed "
        f"in {elapsed:.1f} s ({args.schedules / elapsed:.0f}/s)"
    )
    return 1 if failures else 0
