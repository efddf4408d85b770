"""chatctl's operator verbs and bench against real 3-node clusters (docs/api.md, "chatctl").

Every verb runs as its own process, as an operator runs it, so exit codes and
the one-line stderr rule are checked for real.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chatnode.local_cluster import Cluster, free_port, local_cluster
from client.admin import Row, health_problems
from client.sync import SyncChatClient
from proto import release
from tests.support.nodes import PASSWORD

Rows = list[dict[str, Any]]
WAIT_S = 20.0
BENCH_LIMIT_S = 60.0


def chatctl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "client.chatctl", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={k: v for k, v in os.environ.items() if k != "CHAT_CLUSTER"},
    )


def ok(*args: str) -> str:
    """Run a verb that must succeed; its stdout."""
    result = chatctl(*args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def fails(*args: str, code: int = 1) -> str:
    """Run a verb that must fail with `code` and one line on stderr; that line."""
    result = chatctl(*args)
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def status(cluster: Cluster) -> Rows:
    return json.loads(ok("--cluster", cluster.spec, "status", "--json"))


def wait_for_status(cluster: Cluster, condition: Callable[[Rows], bool]) -> Rows:
    """Poll ``chatctl status --json`` until condition holds (the cluster converges)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        rows = status(cluster)
        if condition(rows):
            return rows
        time.sleep(0.2)
    raise AssertionError(f"status never matched; last:\n{json.dumps(rows, indent=1)}")


def by_id(rows: Rows) -> dict[int, dict[str, Any]]:
    return {row["id"]: row for row in rows if "id" in row}


def leaders(rows: Rows) -> list[int]:
    return [row["id"] for row in rows if row.get("role") == "leader"]


def whole(rows: Rows) -> bool:
    """Three members, one leader, all three in sync and caught up."""
    return (
        len(rows) == 3
        and len(leaders(rows)) == 1
        and all(row.get("member") and row.get("in_sync") and row.get("lag") == 0 for row in rows)
    )


def send_messages(cluster: Cluster, count: int) -> None:
    with SyncChatClient(cluster.addresses) as chat:
        chat.create_account("op", PASSWORD)
        chat.login("op", PASSWORD)
        for i in range(count):
            chat.send_message("op", f"note {i}")


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A running 3-node cluster; chatctl gets its secret from CHAT_CLUSTER_SECRET_FILE."""
    with local_cluster(tmp_path, size=3) as running:
        monkeypatch.setenv("CHAT_CLUSTER_SECRET_FILE", str(running.secret_file))
        yield running


def test_status_shows_three_members_one_leader_and_an_isr_of_three(cluster: Cluster) -> None:
    rows = wait_for_status(cluster, whole)
    assert sorted(by_id(rows)) == [1, 2, 3]
    assert {row["term"] for row in rows} == {rows[0]["term"]}
    assert {row["epoch"] for row in rows} == {rows[0]["epoch"]}
    assert all(isinstance(row["match"], int) and row["match"] > 0 for row in rows)
    header, *table = ok("--cluster", cluster.spec, "status").strip().splitlines()
    assert header.split() == [
        "ID", "ADDRESS", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "EPOCH", "MEMBER",
        "IN-SYNC", "MATCH", "LAG", "CLOCK-MS", "MODE", "VERSION",
    ]  # fmt: skip
    assert all(0 < row["applied"] <= row["commit"] for row in rows), "applied only what committed"
    assert {row["mode"] for row in rows} == {"fail-stop"}
    assert {row["version"] for row in rows} == {release.version()}
    followers = [row for row in rows if row["role"] != "leader"]
    assert all(abs(row["clock_ms"]) < 1000 for row in followers), "one machine, one clock"
    assert len(table) == 3 and [line.split()[2] for line in table].count("leader") == 1


def row(node_id: int, role: str = "follower", **fields: Any) -> Row:
    """A member's status row as ClusterAdmin.status gives it, up and in sync unless told."""
    defaults = Row(f"h{node_id}", up=True, id=node_id, role=role, term=4, member=True, in_sync=True)
    return dataclasses.replace(defaults, **fields)


@pytest.mark.parametrize(
    ("rows", "problems"),
    [
        ([row(1, "leader"), row(2), row(3)], []),
        ([row(1), row(2), row(3)], ["no leader"]),
        ([row(1, "leader"), row(2, up=False), row(3)], ["node 2 down"]),
        ([row(1, "leader"), row(2, up=False, in_sync=False), row(3)], ["node 2 down"]),
        ([row(1, "leader"), row(2, in_sync=False), row(3)], ["node 2 not in sync"]),
        ([row(1, "leader", fault="log: disk full"), row(2), row(3)], ["node 1: log: disk full"]),
        ([row(1, "leader"), row(2), row(9, member=False)], []),  # given, but not a member
        ([row(1, up=False), row(2, up=False)], ["no member answered"]),
        (
            [row(1, "leader"), row(2, up=False), row(3, in_sync=False)],
            ["node 2 down", "node 3 not in sync"],
        ),
    ],
)
def test_health_names_each_problem(rows: list[Row], problems: list[str]) -> None:
    assert health_problems(rows) == problems


def test_check_says_healthy_then_degraded_when_a_member_dies(cluster: Cluster) -> None:
    """`status --check` is for scripts: one line, exit 0 healthy, 1 degraded."""
    rows = wait_for_status(cluster, whole)
    leader = next(r for r in rows if r["role"] == "leader")
    line = ok("--cluster", cluster.spec, "status", "--check").strip()
    assert line == f"healthy: 3 members in sync, leader {leader['id']}, term {leader['term']}"
    follower = next(r["id"] for r in rows if r["role"] != "leader")
    cluster.nodes[follower].kill()
    assert fails("--cluster", cluster.spec, "status", "--check").startswith(
        f"chatctl: degraded: node {follower} down"
    )


def test_watch_redraws_the_table_until_its_count(cluster: Cluster) -> None:
    spec = cluster.spec
    frames = ok("--cluster", spec, "status", "--watch", "--interval", "0.2", "--count", "3")
    assert frames.count("ADDRESS") == 3 and "\x1b[2J" not in frames  # not a terminal
    lines = ok(
        "--cluster", spec, "status", "--watch", "--json", "--interval", "0.2", "--count", "2"
    )
    assert [len(json.loads(line)) for line in lines.splitlines()] == [3, 3]


def test_watch_ends_quietly_on_ctrl_c(cluster: Cluster) -> None:
    argv = [sys.executable, "-m", "client.chatctl", "--cluster", cluster.spec, "status", "--watch"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert "ADDRESS" in proc.stdout.readline() + proc.stdout.readline() + proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0 and stderr == ""


def test_transfer_leader_moves_leadership(cluster: Cluster) -> None:
    rows = wait_for_status(cluster, whole)
    target = next(row["id"] for row in rows if row["role"] == "follower")
    reply = ok("--cluster", cluster.spec, "transfer-leader", str(target))
    assert reply.strip() == f"leadership is moving to node {target}"
    rows = wait_for_status(cluster, lambda rows: leaders(rows) == [target])
    assert all(row["leader"] == target for row in rows if row["up"])


def test_transfer_leader_can_wait_for_the_new_leader(cluster: Cluster) -> None:
    rows = wait_for_status(cluster, whole)
    target = next(row["id"] for row in rows if row["role"] == "follower")
    out = ok("--cluster", cluster.spec, "transfer-leader", str(target), "--wait", "10")
    assert out.splitlines()[-1].startswith(f"node {target} leads (term ")


def test_removed_member_added_back_catches_up_and_rejoins_the_isr(cluster: Cluster) -> None:
    rows = wait_for_status(cluster, whole)
    victim = next(row for row in rows if row["role"] == "follower")
    reply = ok("--cluster", cluster.spec, "remove-member", str(victim["id"]))
    assert reply.startswith(f"member {victim['id']} removed at index ")
    rows = wait_for_status(cluster, lambda rows: not by_id(rows)[victim["id"]]["member"])
    assert sum(bool(row.get("in_sync")) for row in rows) == 2
    send_messages(cluster, 20)  # the removed node misses these
    reply = ok("--cluster", cluster.spec, "add-member", str(victim["id"]), victim["address"])
    assert reply.startswith(f"member {victim['id']} added at index ")
    rows = wait_for_status(cluster, whole)
    assert by_id(rows)[victim["id"]]["match"] >= by_id(rows)[leaders(rows)[0]]["commit"]


def test_admin_verbs_without_the_secret_are_refused_in_one_line(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    wait_for_status(cluster, whole)
    monkeypatch.delenv("CHAT_CLUSTER_SECRET_FILE")
    line = fails("--cluster", cluster.spec, "transfer-leader", "2")
    assert line == (
        "chatctl: peer and admin calls need the cluster secret or a member/admin certificate"
    )
    wrong = tmp_path / "wrong.secret"
    ok("secret", "new", str(wrong))
    line = fails(
        "--cluster-secret-file", str(wrong), "--cluster", cluster.spec, "remove-member", "3"
    )
    assert line == "chatctl: wrong cluster credentials"
    assert len(by_id(wait_for_status(cluster, whole))) == 3  # nothing changed


def test_secret_new_writes_64_hex_characters_readable_by_the_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "cluster.secret"
    assert ok("secret", "new", str(path)).startswith(f"wrote a new cluster secret to {path}")
    assert len(path.read_text().strip()) == 64 and int(path.read_text(), 16) >= 0
    assert path.stat().st_mode & 0o777 == 0o600
    assert fails("secret", "new", str(path)).endswith(
        "exists; remove it first to replace the secret"
    )
    short = tmp_path / "short.secret"
    short.write_text("too short\n")
    line = fails("--cluster-secret-file", str(short), "status", code=2)
    assert "needs at least 32" in line


def test_force_leader_without_the_flag_exits_2_and_says_what_it_risks() -> None:
    line = fails("--cluster", f"1=127.0.0.1:{free_port()}", "force-leader", "1", code=2)
    assert "lost" in line and "--accept-data-loss" in line


def test_force_leader_revives_a_node_whose_peers_are_gone(cluster: Cluster) -> None:
    """The way out of coord/PROTOCOL.md §12: the last in-sync nodes are lost, one restarts.

    A restarted node cannot prove its config is the latest, so it never elects
    itself; the operator accepts the loss and makes it lead.
    """
    wait_for_status(cluster, whole)
    for node in cluster.nodes.values():
        node.kill()
    survivor = cluster.nodes[2]
    survivor.start()
    time.sleep(2.5)  # more than two leases: it would have elected itself by now
    assert leaders(status(cluster)) == []
    reply = ok("--cluster", cluster.spec, "force-leader", "2", "--accept-data-loss")
    assert reply.strip() == "node 2 now leads with an ISR of itself"
    rows = wait_for_status(cluster, lambda rows: leaders(rows) == [2])
    assert [row["id"] for row in rows if row.get("in_sync")] == [2]
    send_messages(cluster, 1)  # and it takes writes


def test_refusals_print_one_line_and_exit_1(cluster: Cluster) -> None:
    rows = wait_for_status(cluster, whole)
    leader = leaders(rows)[0]
    follower = next(row["id"] for row in rows if row["role"] == "follower")
    spec = cluster.spec
    assert fails("--cluster", spec, "transfer-leader", "9") == (
        "chatctl: node 9 is not an in-sync follower"
    )
    assert fails("--cluster", spec, "remove-member", str(leader)) == (
        "chatctl: the leader cannot remove itself: transfer leadership first"
    )
    assert fails("--cluster", spec, "remove-member", "9") == "chatctl: node 9 is not a member"
    address = cluster.nodes[follower].address
    line = fails("--cluster", spec, "add-member", str(follower), address)
    assert line == f"chatctl: node {follower} is already a member or not a valid id"
    line = fails("--cluster", spec, "force-leader", str(follower), "--accept-data-loss")
    assert line.endswith(f"node {leader} leads and is alive")


@pytest.mark.parametrize(
    "argv",
    [
        ["add-member", "4", "nohostport"],
        ["add-member", "zero", "127.0.0.1:1"],
        ["remove-member"],
        ["transfer-leader", "0"],
        ["status", "--interval", "-1"],
        ["bench", "--parts", "throughput,nonsense"],
        ["bench", "--use-cluster", "--parts", "failover"],
        ["bench", "--node-control", "true", "--parts", "failover"],
        ["bench", "--use-cluster", "--node-control", "true", "--parts", "memory"],
        ["bench", "--clients", "1,x"],
        ["bench", "--paths", "stream,carrier-pigeon"],
        ["bench", "--unary", "--paths", "stream"],
        ["bench", "--use-cluster", "--node-control", "true", "--parts", "catchup"],
        ["bench", "--parts", "catchup", "--catchup-mib", "0"],
        ["bench", "--use-cluster", "--tls"],
        ["bench", "--use-cluster", "--parts", "recovery"],
        ["bench", "--parts", "catchup,recovery"],
        ["bench", "--parts", "recovery", "--recovery-log-entries", "0"],
        ["bench", "--parts", "recovery", "--recovery-messages", "200000"],
        ["status", "--check", "--json"],
        ["status", "--check", "--watch"],
    ],
)
def test_bad_usage_exits_2_with_one_line(argv: list[str]) -> None:
    fails("--cluster", f"1=127.0.0.1:{free_port()}", *argv, code=2)


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def test_bench_prints_side_by_side_lines_for_the_shared_hook() -> None:
    """One line per level in ../shared/bench/load.py's form (side-by-side.sh's table)."""
    result = chatctl("bench", "--parts", "throughput", "--clients", "1,2", "--messages", "50",
                     "--paths", "unary,stream", "--side-by-side-json",
                     timeout=BENCH_LIMIT_S)  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["system"], r["conc"]) for r in rows] == [
        ("chat-unary", 1), ("chat-stream", 1), ("chat-unary", 2), ("chat-stream", 2)
    ]  # fmt: skip
    assert all(_positive(r[k]) for r in rows for k in ("n", "rate", "p50", "p99"))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="--tls needs openssl")
def test_bench_tls_measures_its_own_cluster_under_tls() -> None:
    result = chatctl("bench", "--tls", "--parts", "throughput", "--clients", "2",
                     "--messages", "20", "--json", timeout=BENCH_LIMIT_S)  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["setup"]["tls"] is True
    assert _positive(report["throughput"][0]["per_second"])


def test_bench_quick_reports_every_part_as_json() -> None:
    started = time.monotonic()
    result = chatctl("bench", "--quick", "--json", timeout=BENCH_LIMIT_S)
    assert time.monotonic() - started < BENCH_LIMIT_S
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["setup"]["parts"] == ["throughput", "delivery", "memory", "failover"]
    assert [level["clients"] for level in report["throughput"]] == [1, 8]
    for level in report["throughput"]:
        assert all(_positive(level[k]) for k in ("messages", "per_second", "p50_ms", "p99_ms"))
        assert level["path"] == "stream" and _positive(level["fsyncs_per_1000"])
        assert _positive(level["entries_per_peer_write"])
        cpu = level["cpu_ms_per_message"]
        assert sorted(cpu) == ["client", "follower", "leader"]
        assert all(_positive(ms) for ms in cpu.values())
    delivery = report["delivery"]
    assert delivery["senders"] == 8 and _positive(delivery["messages"])
    p50, p99 = delivery["send_to_stream_p50_ms"], delivery["send_to_stream_p99_ms"]
    assert _positive(p50) and p99 >= p50
    memory = report["memory"]
    assert memory["stored_messages"] >= 2000 and sorted(memory["rss_mib"]) == ["1", "2", "3"]
    assert all(_positive(mib) for mib in memory["rss_mib"].values())
    for kind in ("kill", "stop"):
        runs = report["failover"][kind]
        assert len(runs["runs_ms"]) == 1 and _positive(runs["median_ms"])
    assert report["failover"]["stop"]["stale_acks"] == 0
    assert report["scale"] is None


def quick_part(part: str) -> dict[str, Any]:
    """The JSON report of `bench --parts PART --quick`, which must finish within the limit
    on a cluster keeping the log the part asks for."""
    started = time.monotonic()
    result = chatctl("bench", "--parts", part, "--quick", "--json", timeout=BENCH_LIMIT_S)
    assert time.monotonic() - started < BENCH_LIMIT_S
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["setup"]["parts"] == [part]
    return report


def test_bench_quick_catchup_times_writes_through_a_snapshot_catch_up() -> None:
    report = quick_part("catchup")
    assert report["setup"]["log_keep_entries"] == 512 // 3
    catchup = report["catchup"]
    assert catchup["loaded_messages"] == 512 and catchup["loaded_bytes"] == 32 << 20
    assert catchup["leader_state_bytes"] >= 32 << 20
    assert catchup["snapshot_bytes"] >= 32 << 20 and _positive(catchup["snapshot_index"])
    assert 0 < catchup["restart_to_installed_s"] <= catchup["catch_up_s"]
    assert _positive(catchup["writes_before"]) and _positive(catchup["writes_acked_during"])
    assert catchup["during_p50_ms"] <= catchup["during_p99_ms"] <= catchup["longest_ack_ms"]
    assert catchup["failed_writes"] == 0, catchup["first_failure"]
    assert _positive(catchup["leader_rss_mib_peak"])


def test_bench_quick_recovery_times_a_restart_and_a_rebuild_by_snapshot() -> None:
    report = quick_part("recovery")
    assert report["setup"]["log_keep_entries"] == 1_000
    recovery = report["recovery"]
    assert recovery["stored_messages"] >= 3_000 and recovery["log_keep_entries"] == 1_000
    assert recovery["log_entries"] >= 1_000 and _positive(recovery["state_bytes"])
    restart, wiped = recovery["restart"], recovery["wiped"]
    assert 0 < restart["serves_s"] <= restart["in_sync_s"] and restart["installed_s"] is None
    back = wiped["way_back"]
    assert 0 < back["serves_s"] <= back["installed_s"] <= back["in_sync_s"]
    assert wiped["snapshots_installed"] >= 1 and _positive(wiped["snapshot_index"])
    for mib in (restart["peak_rss_mib"], back["peak_rss_mib"], wiped["leader_peak_rss_mib"]):
        assert _positive(mib)
