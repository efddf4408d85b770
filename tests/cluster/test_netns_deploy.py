"""deploy/cluster.sh end to end on machines made of network namespaces.

One cluster is deployed with ``--tls`` onto hosts h1-h3 (h4 waits to be
added), each with two listeners: peers and operators on :7001 behind mutual
TLS, chat users on :7000 behind server-only TLS (the fault schedules,
tests/netns/schedules.py, deploy the one-listener layout). The tests walk the
operator's path in order: up, a re-run that changes nothing, the unit as
systemd would run it, clients in their own namespace across failovers, a
rolling upgrade under writes, adding and removing a machine, down and up
again with the data kept.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.netns.deploy import (
    VENV_BIN,
    WHEELHOUSE,
    cluster_sh,
    main_pid,
    skip_unless_possible,
    status_rows,
)
from tests.netns.hosts import CLIENT_PORT, REPO, Lab
from tests.netns.schedules import Writers, wait_settled
from tests.support.nodes import PASSWORD
from tests.support.terminal import Terminal

skip_unless_possible()
pytestmark = pytest.mark.timeout(600)

SIZE = 3
T = TypeVar("T")
MAX_WRITE_GAP_S = 5.0  # a restart moves leadership first: writes pause about a lease


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with Lab(tmp_path_factory.mktemp("lab"), SIZE + 1, two_listeners=True) as made:
        yield made


@pytest.fixture(scope="module")
def hosts_file(lab: Lab) -> Path:
    path = lab.hosts_file(range(1, SIZE + 1))
    cluster_sh(lab, "up", str(path), "--tls", "--wheels", str(WHEELHOUSE))
    return path


def tls_args(hosts_file: Path) -> list[str]:
    """What a chat user on the client machine passes: the CA, and no certificate."""
    return [f"--tls-ca={hosts_file}.d/tls/ca.pem"]


def tls_flags(hosts_file: Path) -> str:
    return " ".join(tls_args(hosts_file))


def test_up_installs_every_machine_as_the_unit_says(lab: Lab, hosts_file: Path) -> None:
    rows = status_rows(lab.host(1))
    assert sorted(r["id"] for r in rows if r["member"] and r["in_sync"]) == [1, 2, 3]
    assert sum(r["role"] == "leader" for r in rows) == 1
    for node_id in range(1, SIZE + 1):
        host = lab.host(node_id)
        secret = host.run("stat -c '%a %U' /etc/chat/cluster.secret /etc/chat/tls/node.key")
        assert secret.stdout.split("\n")[:2] == ["600 chat", "600 chat"]
        env = host.file("/etc/chat/chatnode.env").read_text()
        assert f"CHAT_NODE_ID={node_id}\n" in env
        assert "CHAT_TLS_CA=/etc/chat/tls/ca.pem\n" in env
        assert "CHAT_CLIENT_TLS_CERT=/etc/chat/tls/node.pem\n" in env
        pid = main_pid(host)
        owner = host.run(f"stat -c %U /proc/{pid}")
        assert owner.stdout.strip() == "chat", "the node must run as User=chat"
        cmdline = host.run(f"tr '\\0' ' ' </proc/{pid}/cmdline").stdout
        assert f"{VENV_BIN}/chatnode" in cmdline
        verify = host.run("systemd-analyze verify /etc/systemd/system/chatnode.service 2>&1")
        assert verify.stdout.strip() == "", verify.stdout
    assert len(versions(rows)) == 1, "every node runs the one release, from the one lock"


def versions(rows: list[dict]) -> set[str]:
    return {row["version"] for row in rows if row["up"]}


def test_a_node_names_its_release_and_runs_without_the_terminal_client(lab: Lab) -> None:
    host = lab.host(1)
    rev = host.run('basename "$(readlink /opt/chat)"').stdout.strip()
    shown = host.run(f"{VENV_BIN}/chatnode --version").stdout.split()
    assert shown == ["chatnode", f"{shown[1].split('+')[0]}+release.{rev}"]
    assert versions(status_rows(host)) == {shown[1]}
    chat = host.run(f"{VENV_BIN}/chat --version", check=False)
    assert chat.returncode == 1 and chat.stdout == ""
    assert chat.stderr.strip().splitlines() == [
        "chat: the terminal client needs prompt_toolkit: pip install 'leased-chat[client]'"
    ]


def test_up_again_changes_nothing(lab: Lab, hosts_file: Path) -> None:
    before = [main_pid(lab.host(i)) for i in range(1, SIZE + 1)]
    done = cluster_sh(lab, "up", str(hosts_file))
    assert done.stdout.count("changed=0") == SIZE, done.stdout
    assert [main_pid(lab.host(i)) for i in range(1, SIZE + 1)] == before


def poll(probe: Callable[[], T], what: str, within_s: float) -> T:
    """Poll a host until probe() is truthy; what crosses into a namespace host (a restart
    the runner records, a STATUS= line) carries no event this process could await."""
    deadline = time.monotonic() + within_s
    while not (value := probe()):
        assert time.monotonic() < deadline, f"no {what} within {within_s} s"
        time.sleep(0.2)
    return value


def test_restart_returns_once_the_node_serves_and_status_names_its_role(
    lab: Lab, hosts_file: Path
) -> None:
    host = lab.host(2)
    before = main_pid(host)
    host.run("systemctl restart chatnode")  # Type=notify: it returns after READY=1
    assert main_pid(host) != before
    rows = {r["id"]: r for r in status_rows(host)}
    assert rows[2]["up"], "the node must answer as soon as `systemctl restart` returns"
    line = poll(
        lambda: re.search(r'Status: "(.*)"', host.run("systemctl status chatnode").stdout),
        "Status: line",
        10,
    )
    shown = line.group(1)
    assert re.fullmatch(r"(leader|follower|candidate), term \d+, (leader \d+|no leader)", shown)
    assert wait_settled(lab, range(1, SIZE + 1))


def test_a_frozen_node_is_aborted_by_the_watchdog_and_restarted(lab: Lab, hosts_file: Path) -> None:
    """SIGSTOP freezes the whole process, its event loop with it. WatchdogSec=10 then
    sends SIGABRT with a SIGCONT (as systemd does), so the node dies of SIGABRT."""
    follower = next(r["id"] for r in status_rows(lab.host(1)) if r["role"] == "follower")
    host = lab.host(follower)
    frozen = main_pid(host)
    restarts = int(host.run("systemctl show -p NRestarts --value chatnode").stdout)
    host.run("systemctl kill -s STOP chatnode")
    poll(lambda: main_pid(host) not in (0, frozen), "restarted node", 60)
    assert int(host.run("systemctl show -p NRestarts --value chatnode").stdout) == restarts + 1
    journal = host.run("cat /var/log/unit-shim/chatnode.service.log").stdout
    assert "Watchdog timeout (limit 10s)!" in journal
    assert f"Killing process {frozen} with signal SIGABRT." in journal
    assert "code=killed, status=6/ABRT" in journal
    assert "Fatal Python error: Aborted" in journal  # and the stacks of its threads
    assert wait_settled(lab, range(1, SIZE + 1))


def test_chatctl_on_the_client_machine_shows_every_host(lab: Lab, hosts_file: Path) -> None:
    assert lab.client is not None
    spec = lab.spec(range(1, SIZE + 1))
    table = lab.client.run(
        f"{REPO}/.venv/bin/chatctl --cluster {spec} {tls_flags(hosts_file)} status"
    ).stdout
    for node_id in range(1, SIZE + 1):
        assert f"{lab.host(node_id).address}:{CLIENT_PORT}" in table
    assert table.count(" yes ") >= SIZE  # member and in sync, each


def test_peers_listen_apart_from_chat_users(lab: Lab, hosts_file: Path) -> None:
    """Without a member's or an operator's certificate the peer listeners refuse; a chat
    user's certificate opens nothing there either; plaintext reaches no listener."""
    assert lab.client is not None
    spec = lab.spec(range(1, SIZE + 1))
    tls = Path(f"{hosts_file}.d/tls")
    chatctl = f"{REPO}/.venv/bin/chatctl --cluster {spec}"
    for flags in (
        f"--tls-ca {tls}/ca.pem",
        f"--tls-ca {tls}/ca.pem --tls-cert {tls}/client.pem --tls-key {tls}/client.key",
    ):
        done = lab.client.run(f"{chatctl} {flags} transfer-leader 2", check=False)
        assert done.returncode == 1, done.stdout
    plain = lab.client.run(f"{chatctl} status", check=False)
    assert plain.returncode == 1 and "no member answered" in plain.stderr
    assert lab.client.run(f"{chatctl} --tls-ca {tls}/ca.pem status --check").returncode == 0


def test_remove_and_add_a_machine(lab: Lab, hosts_file: Path) -> None:
    done = cluster_sh(lab, "add", str(hosts_file), "4", lab.member_address(4),
                      lab.host(4).reach)  # fmt: skip
    assert "4 " in hosts_file.read_text().splitlines()[-1]
    rows = {r["id"]: r for r in status_rows(lab.host(4))}
    assert rows[4]["member"] and rows[4]["in_sync"], done.stdout
    cluster_sh(lab, "remove", str(hosts_file), "4")
    rows = {r["id"]: r for r in status_rows(lab.host(1))}
    assert 4 not in rows or not rows[4].get("member")
    assert not any(line.startswith("4 ") for line in hosts_file.read_text().splitlines())
    assert lab.host(4).run("systemctl is-active chatnode", check=False).returncode != 0


def test_rolling_upgrade_restarts_one_node_at_a_time_while_writes_go_on(
    lab: Lab, hosts_file: Path, tmp_path: Path
) -> None:
    newer = tmp_path / "newer"
    shutil.copytree(REPO, newer, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__"))
    (newer / "RELEASE-NOTE").write_text("a new release\n")
    before = {i: main_pid(lab.host(i)) for i in range(1, SIZE + 1)}
    old_version = versions(status_rows(lab.host(1)))
    leader = next(r["id"] for r in status_rows(lab.host(1)) if r["role"] == "leader")
    writers = Writers(lab, tmp_path, "upgrade", tls_args(hosts_file), range(1, SIZE + 1))
    writers.start(secs=300)
    started = time.monotonic()
    done = cluster_sh(lab, "upgrade", str(hosts_file), repo=newer)
    finished = time.monotonic()
    history = writers.stop(timeout=60, now=True)
    restarts = [line for line in done.stdout.splitlines() if "restarting" in line]
    assert len(restarts) == SIZE and restarts[-1] == f"cluster.sh: node {leader}: restarting"
    after = {i: main_pid(lab.host(i)) for i in range(1, SIZE + 1)}
    assert all(after[i] != before[i] for i in after)
    wait_settled(lab, range(1, SIZE + 1))
    new_version = versions(status_rows(lab.host(1)))
    assert len(new_version) == 1 and new_version != old_version, (old_version, new_version)
    verdict = writers.judge(history)
    assert verdict.ok, verdict.summary()
    acks = sorted(op.completed for op in history.ops if op.outcome == "ok")
    during = [t for t in acks if started <= t <= finished]
    gaps = [b - a for a, b in zip([started, *during], [*during, finished], strict=True)]
    assert during and max(gaps) < MAX_WRITE_GAP_S, f"writes stopped for {max(gaps):.1f} s"
    assert cluster_sh(lab, "upgrade", str(hosts_file), repo=newer).stdout.count("restarting") == 0


def test_backup_then_restore_the_whole_cluster(lab: Lab, hosts_file: Path, tmp_path: Path) -> None:
    kept = Writers(lab, tmp_path, "kept", tls_args(hosts_file), range(1, SIZE + 1))
    history = kept.start(secs=3).stop(timeout=120)
    backup = tmp_path / "chat.backup"
    cluster_sh(lab, "backup", str(hosts_file), str(backup))  # the leader's state
    later = Writers(lab, tmp_path, "later", tls_args(hosts_file), range(1, SIZE + 1))
    later.start(secs=2).stop(timeout=120)
    done = cluster_sh(lab, "restore", str(hosts_file), str(backup))
    assert "restored from" in done.stdout
    for node_id in range(1, SIZE + 1):
        moved = lab.host(node_id).run("ls -d /var/lib/chat.before-restore-*").stdout.split()
        assert len(moved) == 1, "the old data is moved aside, never deleted"
    wait_settled(lab, range(1, SIZE + 1))
    verdict = kept.judge(history)
    assert verdict.ok and verdict.counts.ok > 0, verdict.summary()
    again = cluster_sh(lab, "backup", str(hosts_file), str(backup), "2", check=False)
    assert again.returncode == 1 and "exists" in again.stderr


def test_a_snapshot_saved_over_the_api_restores_the_whole_cluster(
    lab: Lab, hosts_file: Path, tmp_path: Path
) -> None:
    """The operator saves from the client machine, over the peer listeners, with the
    operator certificate; cluster.sh restore takes that file as it takes a backup."""
    assert lab.client is not None
    saved = Writers(lab, tmp_path, "saved", tls_args(hosts_file), range(1, SIZE + 1))
    history = saved.start(secs=3).stop(timeout=120)
    tls = Path(f"{hosts_file}.d/tls")
    operator = f"--tls-ca {tls}/ca.pem --tls-cert {tls}/admin.pem --tls-key {tls}/admin.key"
    chatctl = f"{REPO}/.venv/bin/chatctl --cluster {lab.spec(range(1, SIZE + 1))} {operator}"
    snapshot = tmp_path / "chat.snapshot"
    said = lab.client.run(f"{chatctl} snapshot save {snapshot}").stdout
    status = lab.client.run(f"{chatctl} snapshot status {snapshot}").stdout
    assert "index" in said and "sha256" in status, (said, status)
    done = cluster_sh(lab, "restore", str(hosts_file), str(snapshot))
    assert "restored from" in done.stdout
    wait_settled(lab, range(1, SIZE + 1))
    verdict = saved.judge(history)
    assert verdict.ok and verdict.counts.ok > 0, verdict.summary()


def test_bench_fails_over_across_hosts(lab: Lab, hosts_file: Path) -> None:
    """chatctl bench in the client host, killing and stopping leaders through cluster.sh."""
    assert lab.client is not None
    spec = lab.spec(range(1, SIZE + 1))
    control = f"bash {REPO}/deploy/cluster.sh signal {hosts_file}"
    done = lab.client.run(
        f"CHAT_SSH={lab.seam} {REPO}/.venv/bin/chatctl --cluster {spec} {tls_flags(hosts_file)} "
        f"bench --use-cluster --quick --json --parts failover --node-control '{control}'"
    )
    failover = json.loads(done.stdout)["failover"]
    assert failover["kill"]["median_ms"] > 0 and failover["stop"]["stale_acks"] == 0


def test_chat_in_the_client_host_follows_a_failover(
    lab: Lab, hosts_file: Path, tmp_path: Path
) -> None:
    assert lab.client is not None
    env = {"PYTHONPATH": str(REPO), "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}
    args = ["-m", "client.app", "--cluster", lab.spec(range(1, SIZE + 1)),
            *tls_args(hosts_file), "--history", str(tmp_path / "history")]  # fmt: skip
    terminal = Terminal(args, command=[*lab.client.enter(env), sys.executable])
    try:
        terminal.sign_up("carol", PASSWORD)
        leader = next(r["id"] for r in status_rows(lab.host(1)) if r["role"] == "leader")
        terminal.wait_for(f"leader {leader}")
        cluster_sh(lab, "signal", str(hosts_file), str(leader), "KILL")
        terminal.type("/send carol after the failover")
        terminal.wait_for("you → carol: after the failover")
        bar = next(line for line in terminal.text().splitlines() if "│ term " in line)
        shown = int(re.search(r"│ leader (\d+) │", bar).group(1))  # type: ignore[union-attr]
        assert shown != leader, f"the status bar still shows the killed leader: {bar}"
        terminal.child.sendcontrol("d")
        assert terminal.exit_status() == 0
    finally:
        terminal.kill()
    wait_settled(lab, range(1, SIZE + 1))


def test_down_then_up_keeps_the_data(lab: Lab, hosts_file: Path) -> None:
    before = lab.host(1).file("/var/lib/chat").exists()
    cluster_sh(lab, "down", str(hosts_file))
    for node_id in range(1, SIZE + 1):
        state = lab.host(node_id).run("systemctl is-active chatnode", check=False)
        assert state.stdout.strip() == "inactive"
    cluster_sh(lab, "up", str(hosts_file))
    assert before and sorted(r["id"] for r in status_rows(lab.host(2)) if r["in_sync"]) == [1, 2, 3]


def test_bad_hosts_files_are_refused_with_one_line(lab: Lab, tmp_path: Path) -> None:
    for text, message in [
        ("1 10.77.0.11:7001\n", "want 'ID ADDRESS REACH'"),
        ("x 10.77.0.11:7001 root@10.77.0.11\n", "bad id 'x'"),
        ("1 10.77.0.11 root@10.77.0.11\n", "bad address"),
        ("1 10.77.0.11:7001/10.77.0.11 root@10.77.0.11\n", "bad address"),
        ("1 a:1 r\n1 b:1 r\n", "listed twice"),
        ("# nothing\n", "lists no machines"),
    ]:
        path = tmp_path / "hosts"
        path.write_text(text)
        done = cluster_sh(lab, "status", str(path), check=False)
        assert done.returncode == 1 and message in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    done = subprocess.run(["bash", str(REPO / "deploy" / "cluster.sh"), "frobnicate", "x"],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 2
