"""Recovery: how long a node takes to come back on a large state, and the memory it needs.

A node restarts after a crash, an upgrade or a reboot, and one whose disk was
lost comes back empty. Until it is in sync again the cluster runs a member short
(in quorum mode, a failure away from refusing writes), so the time it takes
matters, and so does its memory on the way: a start that read its whole log or
state into memory would show as a peak far above what the node needs running.

The cluster holds ``recovery_messages`` stored messages, loaded through the API
as the memory and scale parts load theirs (bench.load.fill); its nodes run with
``--log-keep-entries recovery_log_entries``, so each log holds between that many
entries and twice that. No writes run while a node comes back: the figures are
the recovery's own cost. Two ways back, for one follower:

- **restart**: kill -9 (a crash: SQLite's files are left as the process had
  them), then start it on its data. Timed from the start of its process until
  it serves (answers GetClusterStatus: its gRPC server starts once its log and
  state are open) and until it is in sync (the leader's ISR holds it and it has
  applied the leader's commit index).
- **wiped**: it loses its disk and comes back the documented way
  (docs/design.md, "Rebuilding a node"): remove-member, its data dir removed,
  add-member, started with ``--join``. Timed from its start until it serves, has
  installed a snapshot of the leader's state, and is in sync; the leader, which
  captures and streams that snapshot, has its memory measured too.

Peaks are the kernel's own high-water mark (VmHWM in /proc/PID/status), not
samples that could miss a short spike: a restarted process's counts from its
start, and the leader's is reset (/proc/PID/clear_refs) as the wiped node starts.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import watch
from bench.load import Fleet, fill
from bench.nodes import wait_until_healthy
from bench.plan import Plan
from chatnode.local_cluster import NodeProcess
from client.admin import ClusterAdmin, reference_view
from proto.credentials import Metadata

MIB = 1 << 20
COMPACT_TIMEOUT_S = 60.0  # every node compacts on its checkpoint, every 2 s
REMOVAL_TIMEOUT_S = 30.0
RESET_PEAK = "5"  # written to /proc/PID/clear_refs: VmHWM starts again from VmRSS


@dataclass(frozen=True, slots=True)
class WayBack:
    """One node's way back, timed from the start of its process."""

    serves_s: float  # -> it answers GetClusterStatus
    installed_s: float | None  # -> its log says it installed a snapshot (None: not wiped)
    in_sync_s: float  # -> in the leader's ISR, the leader's commit index applied
    peak_rss_mib: float  # VmHWM at in sync: the most it held resident since it started
    rss_mib_in_sync: float


@dataclass(frozen=True, slots=True)
class Rejoin:
    """The wiped node's way back, and what its snapshot cost the leader."""

    way_back: WayBack
    leader_state_bytes: int  # as the node started
    snapshot_index: int
    snapshots_installed: int  # until it was in sync: more than 1 is a wasted copy
    leader_rss_mib_before: float  # as the node started
    leader_peak_rss_mib: float  # VmHWM from then until the node was in sync


@dataclass(frozen=True, slots=True)
class RecoveryResult:
    stored_messages: int
    load_per_second: float  # filling up to stored_messages (0: earlier parts had)
    log_keep_entries: int
    state_bytes: int  # the follower's state (state.db's pages) when it was killed
    log_entries: int  # entries in its log when it was killed
    rss_mib_before: float  # its RSS before the kill, after the load
    restart: WayBack
    wiped: Rejoin
    elections: int  # the cluster's term moving on from the first kill to the end


def _progress(text: str) -> None:
    watch.progress("recovery", text)


def _peak_rss_mib(node: NodeProcess) -> float:
    """The node's peak RSS since it started or since _reset_peak (VmHWM)."""
    for line in Path(f"/proc/{node.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmHWM for node {node.node_id} (pid {node.pid})")


def _reset_peak(node: NodeProcess) -> None:
    Path(f"/proc/{node.pid}/clear_refs").write_text(RESET_PEAK)


def _rss_mib(node: NodeProcess) -> float:
    return round(node.rss_bytes() / MIB, 1)


def _log_entries(node: NodeProcess) -> int:
    return watch.sqlite_value(node.data_dir / "log.db", "SELECT count(*) FROM log")


async def measure_recovery(
    nodes: Sequence[NodeProcess], fleet: Fleet, plan: Plan, operator: Metadata
) -> RecoveryResult:
    """Fill, restart a follower, then wipe it and add it back; the cluster is whole again
    after. operator is the admin role's call metadata (remove-member, add-member)."""
    addresses = [n.address for n in nodes]
    admin = ClusterAdmin(addresses, credentials=fleet.credentials, metadata=operator)
    return await watch.naming_the_dead("recovery", nodes, _measure(nodes, fleet, plan, admin))


async def _measure(
    nodes: Sequence[NodeProcess], fleet: Fleet, plan: Plan, admin: ClusterAdmin
) -> RecoveryResult:
    rate = await fill(fleet, plan.recovery_messages, plan.load_clients)
    await watch.until("every node compacts its log", COMPACT_TIMEOUT_S, lambda: _compacted(nodes))
    leader_id = await wait_until_healthy(nodes, fleet.credentials)
    node = next(n for n in nodes if n.node_id != leader_id)
    rss_before = _rss_mib(node)
    term = (await watch.until_leader(admin)).term
    await watch.kill_out_of_sync(admin, node)
    stored, state, entries = fleet.stored, watch.state_bytes(node), _log_entries(node)
    _progress(
        f"node {node.node_id} killed on {stored:,} messages, its state {state / MIB:,.0f} MiB, "
        f"{entries:,} log entries; restarting it"
    )
    restart = await _way_back(admin, node, watch.start_with(node), plan.recovery_timeout_s)
    wiped = await _wipe_and_rejoin(admin, nodes, node, plan.recovery_timeout_s)
    elections = (await watch.until_leader(admin)).term - term
    await wait_until_healthy(nodes, fleet.credentials)
    await fleet.follow_leader()
    return RecoveryResult(
        stored_messages=stored,
        load_per_second=rate,
        log_keep_entries=plan.recovery_log_entries,
        state_bytes=state,
        log_entries=entries,
        rss_mib_before=rss_before,
        restart=restart,
        wiped=wiped,
        elections=elections,
    )


def _compacted(nodes: Sequence[NodeProcess]) -> bool:
    """Every node's log starts past its first entry: it holds what the nodes keep (up to
    twice that), and a node that comes back empty needs a snapshot."""
    return all(watch.first_log_index(n) > 1 for n in nodes)


async def _wipe_and_rejoin(
    admin: ClusterAdmin, nodes: Sequence[NodeProcess], node: NodeProcess, timeout_s: float
) -> Rejoin:
    """Kill the node, remove it, delete its data, add it back and start it empty."""
    await watch.kill_out_of_sync(admin, node)
    await admin.remove_member(node.node_id)
    removed = f"the removal of node {node.node_id} commits"
    await watch.until(removed, REMOVAL_TIMEOUT_S, lambda: _removed(admin, node.node_id))
    shutil.rmtree(node.data_dir)
    await admin.add_member(node.node_id, node.address)
    leader_id = (await watch.until_leader(admin)).node_id
    leader = next(n for n in nodes if n.node_id == leader_id)
    leader_state = watch.state_bytes(leader)
    _reset_peak(leader)
    leader_before = _rss_mib(leader)
    log_from = watch.file_size(node.log_path)
    _progress(f"node {node.node_id} wiped and added back; starting it with --join")
    started = watch.start_with(node, "--join", "--log-level", "INFO")  # INFO: its install line
    way_back = await _way_back(admin, node, started, timeout_s, log_from)
    installs = watch.installed_indexes(node, log_from)
    return Rejoin(
        way_back=way_back,
        leader_state_bytes=leader_state,
        snapshot_index=installs[0],
        snapshots_installed=len(installs),
        leader_rss_mib_before=leader_before,
        leader_peak_rss_mib=_peak_rss_mib(leader),
    )


async def _removed(admin: ClusterAdmin, node_id: int) -> bool:
    view = await watch.leader_view(admin)
    return (
        view is not None
        and all(m.id != node_id for m in view.members)
        and view.commit_index >= view.config_epoch
    )


async def _way_back(
    admin: ClusterAdmin,
    node: NodeProcess,
    started: float,
    timeout_s: float,
    snapshot_log_from: int | None = None,
) -> WayBack:
    """Watch the node started at `started` until it serves, then (given where its log stood
    at the start) until it installs a snapshot, then until it is in sync."""
    deadline = started + timeout_s

    async def answers() -> bool:
        return await admin.fetch_status(node.address) is not None

    def since_start(what: str, check: Callable[[], bool | Awaitable[bool]]) -> Awaitable[None]:
        return watch.until(
            f"node {node.node_id} {what}", deadline - time.monotonic(), check, watch.POLL_S
        )

    await since_start("answers", answers)
    serves = time.monotonic() - started
    installed_s = None
    if (offset := snapshot_log_from) is not None:
        await since_start(
            "installs a snapshot", lambda: bool(watch.installed_indexes(node, offset))
        )
        installed_s = round(time.monotonic() - started, 3)
    await since_start("is in sync", lambda: _caught_up(admin, node))
    synced = time.monotonic() - started
    _progress(f"node {node.node_id}: serving after {serves:.2f} s, in sync after {synced:.2f} s")
    return WayBack(
        serves_s=round(serves, 3),
        installed_s=installed_s,
        in_sync_s=round(synced, 3),
        peak_rss_mib=_peak_rss_mib(node),
        rss_mib_in_sync=_rss_mib(node),
    )


async def _caught_up(admin: ClusterAdmin, node: NodeProcess) -> bool:
    """The leader counts the node in sync, and the node has applied the leader's commit
    index (with no writes running, that index stands still)."""
    views = await admin.views(admin.addresses)
    leader, own = reference_view(views), views.get(node.address)
    return (
        leader is not None
        and leader.role == "leader"
        and bool(watch.in_sync(leader, node.node_id))
        and own is not None
        and own.applied_index >= leader.commit_index
    )
