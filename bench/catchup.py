"""Snapshot catch-up on a large state: how long acknowledged writes stall meanwhile.

A follower that missed entries the leader has compacted away gets a copy of
the whole state. On a chat state of a gigabyte the copy takes seconds to
capture, stream, stage and install, and the leader does its share of that
beside its writers; the figure that matters to users is the longest any
acknowledged write waited while it happened.

The part kills a follower (kill -9), loads ``catchup_bytes`` of message
bodies (the largest a body may be) through the API, waits until the leader
has compacted its log past the follower's last entry (so only a snapshot can
bring it back), then starts paced writers of small messages, restarts the
follower and waits until the leader counts it in sync again, by snapshot. The
nodes must keep a short log for that: bench.run starts them with
``--log-keep-entries`` when this part is chosen.

The writers are paced, not back to back: the leader keeps between
``log_keep_entries`` and twice that many entries past its last compaction, so
more writes during the copy than that would compact away the entries that
follow the snapshot, and the follower would need another one. At the pace
chosen the log holds tens of seconds of writes.

Leadership may move meanwhile (a leader busy copying a large state can lose its
lease): the writers are the product's client, which follows the leader, and the
report counts the elections, read from the cluster's term at the kill, the
restart and the end of the catch-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.load import BODY, PASSWORD, SINK, Fleet, p50_p99_ms, sender_names
from bench.nodes import wait_until_healthy
from bench.plan import Plan
from bench.watch import (
    POLL_S,
    file_size,
    first_log_index,
    in_sync,
    installed_indexes,
    kill_out_of_sync,
    last_log_index,
    leader_view,
    naming_the_dead,
    progress,
    start_with,
    state_bytes,
    until,
    until_leader,
)
from chatnode.local_cluster import NodeProcess
from client.admin import ClusterAdmin
from client.library import ChatClient, RetryPolicy
from proto.errors import AlreadyExists
from proto.limits import BODY_MAX_BYTES

MIB = 1 << 20
LARGE_BODY = "x" * BODY_MAX_BYTES  # one byte a character: the largest body a message may have
COMPACT_TIMEOUT_S = 60.0  # the leader compacts on its checkpoint, every 2 s
AFTER_S = 1.0  # writes past the catch-up, so a stall at its very end is seen whole
WRITERS = 2
# A writer keeps retrying one write (one request id) this long before it counts it failed:
# longer than any stall worth measuring, so a stall shows as a long wait, not as an error.
WRITE_DEADLINE_S = 120.0


@dataclass(frozen=True, slots=True)
class CatchupResult:
    log_keep_entries: int
    loaded_messages: int  # of BODY_MAX_BYTES each
    loaded_bytes: int  # of bodies
    load_seconds: float
    load_mib_per_second: float
    leader_state_bytes: int  # the leader's state (state.db's pages) once loaded
    snapshot_index: int
    snapshot_bytes: int  # the largest a snapshot's file was seen (leader's copy or follower's)
    snapshots_installed: int  # by the follower until it was in sync: more than 1 is waste
    restart_to_installed_s: float  # the follower's restart -> its log says it installed
    catch_up_s: float  # the follower's restart -> the leader counts it in sync
    writers: int
    write_rate: float  # writes a second, all writers together
    writes_before: int
    before_p50_ms: float
    before_p99_ms: float
    before_max_ms: float
    writes_acked_during: int  # acknowledged between the restart and the follower in sync
    during_p50_ms: float  # of writes whose wait overlapped the catch-up
    during_p99_ms: float
    longest_ack_ms: float  # the longest wait of any write acknowledged that overlapped it
    longest_ack_started_s: float  # when that write was sent, from the restart
    longest_ack_gap_ms: float  # the longest time no writer got an ack, within the catch-up
    failed_writes: int
    # Elections (the cluster's term moving on) from the kill to the restart, and during
    # the catch-up: each means the writers waited for a leader.
    term_changes_before: int
    term_changes_during: int
    leader_rss_mib_before: float  # at the restart
    leader_rss_mib_peak: float  # the largest sample from the restart to in sync
    first_failure: str | None = None


@dataclass
class _Writer:
    """One account sending small messages at a fixed pace, each call timed.

    A write that takes longer than the pace is followed at once by the next,
    never by a burst making up for the lost ones: the stall is in its own
    wait, and the load on the leader stays what it was.
    """

    client: ChatClient
    period_s: float
    offset_s: float
    acks: list[tuple[float, float]] = field(default_factory=list)  # (sent, acked), monotonic
    failures: list[str] = field(default_factory=list)
    running: bool = True
    acked: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        due = time.monotonic() + self.offset_s
        while self.running:
            if (wait := due - time.monotonic()) > 0:
                await asyncio.sleep(wait)  # the pace itself, not a wait for an event
            sent = time.monotonic()
            try:
                await self.client.send_message(SINK, BODY)
            except Exception as exc:  # counted; a stall is the finding, not the end of the run
                self.failures.append(f"{type(exc).__name__}: {exc}")
            else:
                self.acks.append((sent, time.monotonic()))
                self.acked.set()
            due = max(due + self.period_s, time.monotonic())


def _staged_bytes(nodes: Sequence[NodeProcess], lagger: NodeProcess) -> int:
    """The largest snapshot file there is now: a leader's copy going out, the follower's
    coming in or staged."""
    files = [n.data_dir / f"snapshot-out-{lagger.node_id}.db" for n in nodes]
    files += lagger.data_dir.glob("snapshot-*.staged")
    files += lagger.data_dir.glob("snapshot-from-*.incoming")
    return max((file_size(p) for p in files), default=0)


def _progress(text: str) -> None:
    progress("catchup", text)


async def _load(fleet: Fleet, messages: int, clients: int) -> float:
    """Send `messages` of the largest body, `clients` at a time, each client to the next
    one's account (a ring: no account holds all of it); return the seconds it took."""
    names = sender_names(clients)
    senders = await fleet.session_clients(names)  # sign-ins are not part of the rate
    taken = 0
    step = max(1, messages // 10)
    before = fleet.stored
    started = time.monotonic()

    async def send_from(i: int, client: ChatClient) -> None:
        nonlocal taken
        recipient = names[(i + 1) % len(names)]
        while taken < messages:
            taken += 1
            await client.send_message(recipient, LARGE_BODY)
            fleet.stored += 1
            if messages >= 1000 and (done := fleet.stored - before) % step == 0:
                rate = done * BODY_MAX_BYTES / MIB / (time.monotonic() - started)
                _progress(f"{done:,}/{messages:,} bodies loaded, {rate:.1f} MiB/s")

    await asyncio.gather(*(send_from(i, c) for i, c in enumerate(senders)))
    return time.monotonic() - started


async def _writers(fleet: Fleet, rate: float) -> list[_Writer]:
    """Writers on the product's client, signed up through it too: it finds the leader
    wherever the load left it."""
    policy = RetryPolicy(deadline_s=WRITE_DEADLINE_S)
    period = WRITERS / rate
    writers = []
    for i in range(WRITERS):
        name = f"benchcatchup{i}"
        client = ChatClient(fleet.addresses, credentials=fleet.credentials, policy=policy)
        with contextlib.suppress(AlreadyExists):  # from an earlier run on the same cluster
            await client.create_account(name, PASSWORD)
        await client.login(name, PASSWORD)
        await client.send_message(SINK, BODY)  # opens its stream before anything is timed
        writers.append(_Writer(client, period, offset_s=i * period / WRITERS))
    return writers


async def _acked_after(writers: Sequence[_Writer], when: float, timeout_s: float) -> None:
    """Wait until some writer has an acknowledgement later than `when`."""

    def seen() -> bool:
        return any(w.acks and w.acks[-1][1] > when for w in writers)

    deadline = time.monotonic() + timeout_s
    while not seen():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no write acknowledged within {timeout_s:g} s")
        for w in writers:
            w.acked.clear()
        waits = [asyncio.create_task(w.acked.wait()) for w in writers]
        try:
            await asyncio.wait(
                waits, timeout=deadline - time.monotonic(), return_when="FIRST_COMPLETED"
            )
        finally:
            for task in waits:
                task.cancel()


async def measure_catchup(nodes: Sequence[NodeProcess], fleet: Fleet, plan: Plan) -> CatchupResult:
    """Kill a follower, load, restart it and time the writers through its snapshot catch-up;
    the cluster is whole again after. A node that dies meanwhile is named, with its last
    words: the calls that failed because of it only say a connection broke."""
    return await naming_the_dead("catchup", nodes, _measure(nodes, fleet, plan))


async def _measure(nodes: Sequence[NodeProcess], fleet: Fleet, plan: Plan) -> CatchupResult:
    leader_id = await wait_until_healthy(nodes, fleet.credentials)
    await fleet.follow_leader()
    by_id = {n.node_id: n for n in nodes}
    lagger = next(n for n in nodes if n.node_id != leader_id)
    admin = ClusterAdmin([n.address for n in nodes], credentials=fleet.credentials)

    await kill_out_of_sync(admin, lagger)
    behind = last_log_index(lagger)
    term_at_kill = (await until_leader(admin)).term

    messages = plan.catchup_messages
    _progress(f"node {lagger.node_id} killed; loading {messages:,} bodies of {BODY_MAX_BYTES:,} B")
    load_s = await _load(fleet, messages, plan.catchup_clients)
    _progress(f"loaded in {load_s:.1f} s; waiting for the leader to compact its log")

    async def compacted() -> bool:
        view = await leader_view(admin)
        return view is not None and first_log_index(by_id[view.node_id]) > behind + 1

    await until(
        f"the leader compacts its log past the killed follower's index {behind}",
        COMPACT_TIMEOUT_S,
        compacted,
    )
    leader = by_id[(await until_leader(admin)).node_id]
    leader_state = state_bytes(leader)
    _progress(f"compacted; the leader's state is {leader_state / MIB:,.0f} MiB")

    writers = await _writers(fleet, plan.catchup_write_rate)
    tasks = [asyncio.create_task(w.run()) for w in writers]
    try:
        started = time.monotonic()
        await _acked_after(writers, started + plan.catchup_before_s, WRITE_DEADLINE_S)
        timeline = await _restart_and_catch_up(admin, nodes, lagger, plan)
        await _acked_after(writers, timeline.in_sync + AFTER_S, WRITE_DEADLINE_S)
    finally:
        for w in writers:
            w.running = False
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*tasks), WRITE_DEADLINE_S)
        for w in writers:
            await w.client.close()
    fleet.stored += sum(len(w.acks) for w in writers)
    await wait_until_healthy(nodes, fleet.credentials)
    await fleet.follow_leader()

    acks = sorted(a for w in writers for a in w.acks)
    failures = [f for w in writers for f in w.failures]
    restarted, synced = timeline.restarted, timeline.in_sync
    before = [acked - sent for sent, acked in acks if started <= sent and acked < restarted]
    overlapping = [(sent, acked) for sent, acked in acks if sent <= synced and acked >= restarted]
    during = [acked - sent for sent, acked in overlapping]
    if not before or not during:
        raise RuntimeError("no write acknowledged before or during the catch-up")
    longest = max(overlapping, key=lambda a: a[1] - a[0])
    before_p50, before_p99 = p50_p99_ms(before)
    during_p50, during_p99 = p50_p99_ms(during)
    return CatchupResult(
        log_keep_entries=plan.catchup_log_keep,
        loaded_messages=messages,
        loaded_bytes=messages * BODY_MAX_BYTES,
        load_seconds=round(load_s, 1),
        load_mib_per_second=round(messages * BODY_MAX_BYTES / MIB / load_s, 1),
        leader_state_bytes=leader_state,
        snapshot_index=timeline.snapshot_index,
        snapshot_bytes=timeline.snapshot_bytes,
        snapshots_installed=timeline.snapshots_installed,
        restart_to_installed_s=round(timeline.installed - restarted, 2),
        catch_up_s=round(synced - restarted, 2),
        writers=WRITERS,
        write_rate=plan.catchup_write_rate,
        writes_before=len(before),
        before_p50_ms=before_p50,
        before_p99_ms=before_p99,
        before_max_ms=round(max(before) * 1000, 1),
        writes_acked_during=sum(1 for _, acked in acks if restarted <= acked <= synced),
        during_p50_ms=during_p50,
        during_p99_ms=during_p99,
        longest_ack_ms=round((longest[1] - longest[0]) * 1000, 3),  # as the percentiles
        longest_ack_started_s=round(longest[0] - restarted, 2),
        longest_ack_gap_ms=_longest_gap_ms([acked for _, acked in acks], restarted, synced),
        failed_writes=len(failures),
        term_changes_before=timeline.term_at_restart - term_at_kill,
        term_changes_during=timeline.term_at_sync - timeline.term_at_restart,
        leader_rss_mib_before=timeline.rss_mib_before,
        leader_rss_mib_peak=timeline.rss_mib_peak,
        first_failure=failures[0] if failures else None,
    )


def _longest_gap_ms(acked: Sequence[float], since: float, until: float) -> float:
    """The longest stretch of [since, until] in which no write was acknowledged."""
    marks = [since, *sorted(t for t in acked if since < t < until), until]
    return round(max(b - a for a, b in itertools.pairwise(marks)) * 1000, 1)


@dataclass(frozen=True, slots=True)
class _Timeline:
    restarted: float
    installed: float
    in_sync: float
    snapshot_index: int
    snapshot_bytes: int
    snapshots_installed: int
    term_at_restart: int
    term_at_sync: int
    rss_mib_before: float
    rss_mib_peak: float


async def _restart_and_catch_up(
    admin: ClusterAdmin, nodes: Sequence[NodeProcess], lagger: NodeProcess, plan: Plan
) -> _Timeline:
    """Restart the follower (logging at INFO, for its 'installed snapshot' line) and watch
    until the leader counts it in sync, sampling the snapshot's files and the RSS of
    whichever node leads."""
    by_id = {n.node_id: n for n in nodes}
    view = await until_leader(admin)
    term_at_restart = view.term
    rss_before = rss_peak = by_id[view.node_id].rss_bytes() / MIB
    log_from = file_size(lagger.log_path)
    snapshot_bytes = 0
    installed: float | None = None
    snapshot_index = 0
    restarted = start_with(lagger, "--log-level", "INFO")
    _progress(f"node {lagger.node_id} restarted; waiting for its snapshot")
    deadline = restarted + plan.catchup_timeout_s
    while True:
        now = time.monotonic()
        if now > deadline:
            raise RuntimeError(
                f"node {lagger.node_id} was not in sync within {plan.catchup_timeout_s:g} s "
                f"of its restart (snapshot installed: {installed is not None})"
            )
        snapshot_bytes = max(snapshot_bytes, _staged_bytes(nodes, lagger))
        if installed is None and (found := installed_indexes(lagger, log_from)):
            installed, snapshot_index = now, found[0]
            _progress(f"snapshot at index {found[0]:,} installed after {now - restarted:.1f} s")
        if not lagger.running:
            raise RuntimeError(f"node {lagger.node_id} exited during its catch-up")
        view = await leader_view(admin)
        if view is not None:
            rss_peak = max(rss_peak, by_id[view.node_id].rss_bytes() / MIB)
            if in_sync(view, lagger.node_id):
                synced = time.monotonic()
                break
        await asyncio.sleep(POLL_S)
    installs = installed_indexes(lagger, log_from)
    if not installs:
        raise RuntimeError(f"node {lagger.node_id} caught up without a snapshot")
    if installed is None:  # its line came just before the leader's answer
        installed, snapshot_index = synced, installs[0]
    # A copy small enough to come and go between two looks is the size the follower's
    # state took when it installed it.
    snapshot_bytes = snapshot_bytes or file_size(lagger.data_dir / "state.db")
    return _Timeline(
        restarted, installed, synced, snapshot_index, snapshot_bytes, len(installs),
        term_at_restart, view.term, round(rss_before, 1), round(rss_peak, 1),
    )  # fmt: skip
