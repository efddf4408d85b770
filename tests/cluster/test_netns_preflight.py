"""`deploy/cluster.sh check` and a non-root ssh user, on machines made of network namespaces.

The preflight passes on ready hosts and names what is wrong on one that is not
(a taken port, a clock 2 h ahead, a user without passwordless sudo); a user with passwordless
sudo deploys a node, every root command going through `sudo -n`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns.deploy import (
    DEPLOY_TIMEOUT_S,
    WHEELHOUSE,
    cluster_sh,
    main_pid,
    skip_unless_possible,
    status_rows,
)
from tests.netns.hosts import HOST_PATH, PORT, REPO, SHIM_BIN, Host, Lab

skip_unless_possible()
pytestmark = pytest.mark.timeout(600)

CHECKS = ["ssh", "python", "disk", f"port {PORT}", "clock"]
LISTEN = """\
import socket, sys, time
s = socket.create_server(("", int(sys.argv[1])))
print("ready", flush=True)
time.sleep(600)
"""
AHEAD = """\
#!/usr/bin/python3
import os, shlex, sys
*options, command = sys.argv[1:]
os.execv("{seam}", ["{seam}", *options, "faketime -f +2h sh -c " + shlex.quote(command)])
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with Lab(tmp_path_factory.mktemp("lab"), 2) as made:
        yield made


def add_user(host: Host, name: str, *, sudo: bool) -> None:
    """A login user of the host (home under the host's own /var: /home is the machine's),
    with passwordless sudo when asked; sudo's PATH names the folder of the hosts'
    systemctl, as a real machine's names /usr/bin."""
    host.run(f"useradd --create-home --home-dir /var/lib/{name}-home --shell /bin/sh {name}")
    if sudo:
        rule = (
            f'Defaults:{name} secure_path="{SHIM_BIN}:{HOST_PATH}"\n'
            f"{name} ALL=(root) NOPASSWD: ALL\n"
        )
        host.run(f"cat >/etc/sudoers.d/{name} && chmod 0440 /etc/sudoers.d/{name}",
                 input=rule.encode())  # fmt: skip


def remove_user(host: Host, name: str) -> None:
    host.run(f"rm -f /etc/sudoers.d/{name}; userdel --remove {name} 2>/dev/null; true")


@pytest.fixture
def users(lab: Lab) -> Iterator[Host]:
    """On host 1: `op`, with passwordless sudo, and `guest`, without."""
    if shutil.which("sudo") is None:
        pytest.skip("the non-root tests need sudo (apt-get install sudo)")
    host = lab.host(1)
    add_user(host, "op", sudo=True)
    add_user(host, "guest", sudo=False)
    try:
        yield host
    finally:
        remove_user(host, "op")
        remove_user(host, "guest")


def lines_of(done: subprocess.CompletedProcess[str], node_id: int) -> dict[str, str]:
    """Node ID's check lines, by what they check: {'ssh': 'PASS ssh: ...', ...}."""
    found = {}
    for line in done.stdout.splitlines():
        if m := re.match(rf"node {node_id}: ((?:PASS|FAIL) ([a-z]+(?: \d+)?): .*)$", line):
            found[m.group(2)] = m.group(1)
    return found


def test_check_passes_on_ready_machines(lab: Lab) -> None:
    done = cluster_sh(lab, "check", str(lab.hosts_file()))
    for node_id in (1, 2):
        found = lines_of(done, node_id)
        assert sorted(found) == sorted(CHECKS), done.stdout
        assert all(line.startswith("PASS") for line in found.values()), done.stdout
        assert "logs in as root" in found["ssh"]
    assert len(done.stdout.splitlines()) == 2 * len(CHECKS), done.stdout


def test_check_names_a_taken_port(lab: Lab) -> None:
    listener = lab.host(2).spawn(["/usr/bin/python3", "-c", LISTEN, str(PORT)],
                                 stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert listener.stdout is not None and listener.stdout.readline() == b"ready\n"
        done = cluster_sh(lab, "check", str(lab.hosts_file()), check=False)
    finally:
        listener.kill()
        listener.wait(timeout=10)
    assert done.returncode == 1, done.stdout + done.stderr
    failed = [line for line in done.stdout.splitlines() if ": FAIL " in line]
    assert len(failed) == 1, done.stdout
    assert failed[0].startswith(f'node 2: FAIL port {PORT}: in use by users:(("python3"')
    assert all(line.startswith("PASS") for line in lines_of(done, 1).values())


def test_check_names_a_machine_it_cannot_reach(lab: Lab, tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text(f"1 10.77.0.99:{PORT} root@10.77.0.99\n")
    done = cluster_sh(lab, "check", str(path), check=False)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "node 1: FAIL ssh: cannot run a command as root@10.77.0.99 (ssh: connect to host "
        "10.77.0.99: No route to host); nothing else checked"
    ]


def test_check_gives_up_on_a_machine_that_does_not_answer(tmp_path: Path) -> None:
    ssh = tmp_path / "ssh"  # connects, then never answers
    ssh.write_text("#!/bin/sh\nexec sleep 60\n")
    ssh.chmod(0o755)
    path = tmp_path / "hosts"
    path.write_text(f"1 10.77.0.11:{PORT} root@10.77.0.11\n")
    done = subprocess.run(
        ["bash", str(REPO / "deploy" / "cluster.sh"), "check", str(path)],
        env={**os.environ, "CHAT_SSH": str(ssh), "CHAT_CHECK_TIMEOUT_S": "1"},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "node 1: FAIL ssh: cannot run a command as root@10.77.0.11 (no answer in 1s); "
        "nothing else checked"
    ]


def test_check_names_a_clock_two_hours_ahead(lab: Lab, tmp_path: Path) -> None:
    if shutil.which("faketime") is None:
        pytest.skip("the clock test needs faketime (Debian's faketime package)")
    ssh = tmp_path / "ssh"  # the lab's ssh, its commands reading a clock 2 h ahead
    ssh.write_text(AHEAD.format(seam=lab.seam))
    ssh.chmod(0o755)
    done = subprocess.run(
        ["bash", str(REPO / "deploy" / "cluster.sh"), "check", str(lab.hosts_file([1]))],
        env={**lab.deploy_env(), "CHAT_SSH": str(ssh)},
        capture_output=True, text=True, timeout=DEPLOY_TIMEOUT_S,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    found = lines_of(done, 1)
    clock = re.fullmatch(r"FAIL clock: ([-+][0-9.]+) s from this machine's .*", found.pop("clock"))
    assert clock and abs(float(clock.group(1)) - 7200) < 1, done.stdout
    assert all(line.startswith("PASS") for line in found.values()), done.stdout


def test_a_hosts_file_column_other_than_user_is_refused(lab: Lab, tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text(f"1 {lab.host(1).address}:{PORT} {lab.host(1).address} owner=op\n")
    done = cluster_sh(lab, "check", str(path), check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"cluster.sh: {path}: node 1: unknown column 'owner=op' (user=NAME)"
    ]


def test_a_user_without_passwordless_sudo_is_stopped_with_one_line(
    lab: Lab, users: Host, tmp_path: Path
) -> None:
    path = tmp_path / "hosts"
    path.write_text(f"1 {users.address}:{PORT} {users.address} user=guest\n")
    done = cluster_sh(lab, "status", str(path), check=False)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"cluster.sh: node 1: guest@{users.address}: sudo -n fails (sudo: a password is "
        "required): a non-root ssh user needs passwordless sudo"
    ]
    checked = cluster_sh(lab, "check", str(path), check=False)
    assert checked.returncode == 1
    found = lines_of(checked, 1)
    assert found.pop("sudo").startswith("FAIL sudo: guest cannot use sudo -n")
    assert sorted(found) == sorted(CHECKS), "the other checks still run, as guest"
    assert all(line.startswith("PASS") for line in found.values()), checked.stdout


def test_a_non_root_user_with_passwordless_sudo_deploys(
    lab: Lab, users: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAT_SSH_USER", "op")  # for every line of the hosts file
    path = lab.hosts_file([1], name="hosts-op")  # REACH root@..., overridden
    checked = cluster_sh(lab, "check", str(path))
    found = lines_of(checked, 1)
    assert found["ssh"] == f"PASS ssh: op@{users.address} logs in as op"
    assert found["sudo"] == "PASS sudo: op runs commands as root with sudo -n"
    monkeypatch.delenv("CHAT_SSH_USER")
    path.write_text(f"1 {users.address}:{PORT} {users.address} user=op\n")  # the column
    try:
        cluster_sh(lab, "up", str(path), "--wheels", str(WHEELHOUSE))
        rows = status_rows(users)
        assert [(r["id"], r["role"]) for r in rows] == [(1, "leader")]
        owner = users.run(f"stat -c %U /proc/{main_pid(users)} /opt/chat/RELEASE")
        assert owner.stdout.split() == ["chat", "root"]
        assert "leader" in cluster_sh(lab, "status", str(path)).stdout
    finally:
        cluster_sh(lab, "down", str(path), check=False)
    assert users.run("systemctl is-active chatnode", check=False).stdout.strip() == "inactive"
