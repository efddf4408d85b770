"""The bench's report: what each part measured, as text for a person or JSON for a tool."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from bench.catchup import CatchupResult
from bench.delivery import DeliveryResult
from bench.failover import FailoverResult, FailoverRuns
from bench.load import LoadResult
from bench.recovery import RecoveryResult, WayBack
from bench.storage import MemoryResult, ScalePoint, ScaleResult


@dataclass
class Report:
    setup: dict[str, Any]
    throughput: list[LoadResult] | None = None
    delivery: DeliveryResult | None = None
    memory: MemoryResult | None = None
    failover: FailoverResult | None = None
    scale: ScaleResult | None = None
    catchup: CatchupResult | None = None
    recovery: RecoveryResult | None = None


def as_json(report: Report) -> str:
    return json.dumps(dataclasses.asdict(report), indent=2)


def side_by_side_lines(report: Report) -> list[str]:
    """One JSON line per throughput level and path in ../shared/bench/load.py's form
    (system chat-stream or chat-unary), so the bench can be side-by-side.sh's
    CHAT_EXTRA_LOAD (``--clients $CONC``)."""
    rows = [
        {"system": f"chat-{r.path}", "conc": r.clients, "n": r.messages, "rate": r.per_second,
         "p50": r.p50_ms, "p99": r.p99_ms}
        for r in report.throughput or ()
    ]  # fmt: skip
    return [json.dumps(row) for row in rows]


def _render_throughput(results: list[LoadResult]) -> list[str]:
    lines = [
        "throughput: committed messages, one channel per client "
        "(stream: the library's Session stream; unary: a SendMessage call each)",
        f"{'path':>6}  {'clients':>7}  {'msgs':>6}  {'msg/s':>8}  {'p50 ms':>7}  {'p99 ms':>7}  "
        "fsyncs/1000  msgs/peer write  CPU ms/msg leader/follower/client",
    ]
    for r in results:
        fsyncs = "-" if r.fsyncs_per_1000 is None else f"{r.fsyncs_per_1000:.1f}"
        per_write = "-" if r.entries_per_peer_write is None else f"{r.entries_per_peer_write:.2f}"
        cpu = r.cpu_ms_per_message
        cpu_text = (
            "-" if cpu is None else "/".join(f"{cpu[k]:.3f}" for k in sorted(cpu, key=_role_order))
        )
        lines.append(
            f"{r.path:>6}  {r.clients:>7}  {r.messages:>6}  {r.per_second:>8.1f}  "
            f"{r.p50_ms:>7.2f}  {r.p99_ms:>7.2f}  {fsyncs:>11}  {per_write:>15}  {cpu_text}"
        )
    return lines


def _role_order(role: str) -> int:
    return ("leader", "follower", "client").index(role)


def _render_delivery(d: DeliveryResult) -> list[str]:
    return [
        f"live delivery: {d.senders} concurrent senders ({d.path}), each to its own subscribed "
        f"recipient, {d.messages} messages",
        f"  send start -> on the recipient's stream: p50 {d.send_to_stream_p50_ms:.2f} ms  "
        f"p99 {d.send_to_stream_p99_ms:.2f} ms",
        f"  sender's reply -> on the stream:         p50 {d.reply_to_stream_p50_ms:.2f} ms  "
        f"p99 {d.reply_to_stream_p99_ms:.2f} ms (negative: the stream was first)",
    ]


def _render_memory(m: MemoryResult) -> list[str]:
    nodes = "  ".join(
        f"node {i}: {mib:.1f} MiB (at start {m.rss_mib_at_start.get(i, 0):.1f})"
        for i, mib in m.rss_mib.items()
    )
    return [
        f"memory: RSS after {m.stored_messages:,} stored messages "
        f"(loaded at {m.load_per_second:,.0f} msg/s)",
        f"  {nodes}",
    ]


def _render_runs(r: FailoverRuns) -> str:
    runs = " ".join(f"{t:.0f}" for t in r.runs_ms)
    line = f"  {r.signal:<8} median {r.median_ms:>7.1f} ms  (runs: {runs})"
    line += f"; status bar not 'connected' median {r.status_bar_median_ms:.0f} ms"
    if r.stale_acks is not None:
        line += f"; writes acked by the old leader after SIGCONT: {r.stale_acks}"
        line += f" of {len(r.stale_outcomes or [])}"
    return line


def _render_failover(f: FailoverResult) -> list[str]:
    return [
        "failover: signal to the leader -> next write acknowledged by another node "
        f"(client retries, {f.attempt_timeout_ms} ms per attempt)",
        _render_runs(f.kill),
        _render_runs(f.stop),
    ]


def _render_scale(s: ScaleResult) -> list[str]:
    def point(p: ScalePoint) -> str:
        return (
            f"  at {p.stored_messages:>9,} stored: p50 {p.p50_ms:.2f} ms  p99 {p.p99_ms:.2f} ms "
            f"({p.samples} sequential sends)"
        )

    return [
        f"scale: sequential SendMessage latency (bulk load between: {s.load_clients} clients, "
        f"{s.load_per_second:,.0f} msg/s)",
        point(s.small),
        point(s.large),
    ]


def _keep(setup: dict[str, Any]) -> str:
    keep = setup.get("log_keep_entries")
    return "" if keep is None else f", --log-keep-entries {keep:,}"


def _render_catchup(c: CatchupResult) -> list[str]:
    mib = 1 << 20
    failed = (
        f"; {c.failed_writes} writes failed, first: {c.first_failure}" if c.failed_writes else ""
    )
    return [
        f"catchup: a follower killed, {c.loaded_bytes / mib:,.0f} MiB of "
        f"{c.loaded_bytes // c.loaded_messages:,}-byte bodies loaded ({c.loaded_messages:,} "
        f"messages in {c.load_seconds:.1f} s, {c.load_mib_per_second:.1f} MiB/s); the leader's "
        f"state {c.leader_state_bytes / mib:,.0f} MiB; the log keeps {c.log_keep_entries:,} "
        "entries",
        f"  follower restarted -> snapshot installed {c.restart_to_installed_s:.1f} s -> in sync "
        f"{c.catch_up_s:.1f} s (snapshot at index {c.snapshot_index:,}, "
        f"{c.snapshot_bytes / mib:,.0f} MiB; {c.snapshots_installed} installed)",
        f"  writes ({c.writers} clients, {c.write_rate:g}/s in all), wait for the ack: before "
        f"p50 {c.before_p50_ms:.2f} ms p99 {c.before_p99_ms:.2f} ms max {c.before_max_ms:.0f} ms "
        f"({c.writes_before} writes)",
        f"  during the catch-up: {c.writes_acked_during} acked, p50 {c.during_p50_ms:.2f} ms "
        f"p99 {c.during_p99_ms:.2f} ms, longest {c.longest_ack_ms:.0f} ms (sent "
        f"{c.longest_ack_started_s:.1f} s after the restart); longest with no ack at all "
        f"{c.longest_ack_gap_ms:.0f} ms{failed}",
        f"  elections: {c.term_changes_before} from the kill to the restart, "
        f"{c.term_changes_during} during the catch-up; leader's RSS "
        f"{c.leader_rss_mib_before:,.0f} MiB at the restart, peak "
        f"{c.leader_rss_mib_peak:,.0f} MiB during the catch-up",
    ]


def _way_back(w: WayBack) -> str:
    installed = "" if w.installed_s is None else f" -> snapshot installed {w.installed_s:.2f} s"
    return (
        f"serves {w.serves_s:.2f} s{installed} -> in sync {w.in_sync_s:.2f} s; its peak RSS "
        f"{w.peak_rss_mib:,.0f} MiB ({w.rss_mib_in_sync:,.0f} MiB in sync)"
    )


def _render_recovery(r: RecoveryResult) -> list[str]:
    mib = 1 << 20
    wiped = r.wiped
    loaded = f"loaded at {r.load_per_second:,.0f} msg/s" if r.load_per_second else "loaded before"
    return [
        f"recovery: a follower on {r.stored_messages:,} stored messages ({loaded}); its state "
        f"{r.state_bytes / mib:,.0f} MiB, its log {r.log_entries:,} entries (the nodes keep "
        f"{r.log_keep_entries:,}); RSS {r.rss_mib_before:,.0f} MiB before; times from its "
        "process's start",
        f"  kill -9, restart:          {_way_back(r.restart)}",
        f"  wiped, added back, --join: {_way_back(wiped.way_back)}",
        f"  snapshot at index {wiped.snapshot_index:,} ({wiped.snapshots_installed} installed), "
        f"the leader's state {wiped.leader_state_bytes / mib:,.0f} MiB; the leader's RSS "
        f"{wiped.leader_rss_mib_before:,.0f} MiB at the start, peak "
        f"{wiped.leader_peak_rss_mib:,.0f} MiB until in sync; elections: {r.elections}",
    ]


def render(report: Report) -> str:
    setup = report.setup
    lines = [
        f"chatctl bench: {setup['cluster']} (lease {setup['lease_ms']} ms, heartbeat "
        f"{setup['heartbeat_ms']} ms, fsync on, TLS {'on' if setup['tls'] else 'off'}"
        f"{_keep(setup)}), {setup['cpus']} CPUs, "
        f"Python {setup['python']}, "
        f"load average {setup['load_average_at_start'][0]} at start, "
        f"{setup['load_average_at_end'][0]} at end, took {setup['seconds']} s",
    ]
    sections = [
        (report.throughput, _render_throughput),
        (report.delivery, _render_delivery),
        (report.memory, _render_memory),
        (report.failover, _render_failover),
        (report.scale, _render_scale),
        (report.catchup, _render_catchup),
        (report.recovery, _render_recovery),
    ]
    for result, render_part in sections:
        if result is not None:
            lines += ["", *render_part(result)]
    return "\n".join(lines)
