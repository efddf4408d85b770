"""The node's side of systemd's notify protocol (chatnode/supervision.py).

The tests play systemd: they bind the AF_UNIX datagram socket named in NOTIFY_SOCKET and
read what the node sends, first from a Notifier, then from a real chatnode process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatnode.local_cluster import free_port
from chatnode.supervision import Notifier
from client.connect import status_call

REPO = Path(__file__).resolve().parents[2]


class Listener:
    """systemd's end of NOTIFY_SOCKET: one datagram is one message."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + address[1:].encode() if address.startswith("@") else address)

    def message(self, timeout_s: float = 10.0) -> dict[str, str]:
        self.sock.settimeout(timeout_s)
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.split("\n"))

    def until(self, key: str, timeout_s: float = 20.0) -> tuple[dict[str, str], list[dict]]:
        """Messages up to the first carrying key: (that one, all before it)."""
        deadline, before = time.monotonic() + timeout_s, []
        while True:
            message = self.message(max(0.01, deadline - time.monotonic()))
            if key in message:
                return message, before
            before.append(message)


@pytest.fixture
def abstract() -> Iterator[Listener]:
    listener = Listener(f"@chat-test/{uuid.uuid4().hex}")
    yield listener
    listener.sock.close()


def test_without_notify_socket_nothing_is_sent_or_pinged() -> None:
    notifier = Notifier.from_environment({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    notifier.send(READY=1)  # no socket: nothing to fail
    asyncio.run(asyncio.wait_for(notifier.keep_alive(), 1))  # returns at once


def test_messages_reach_a_path_socket_and_an_abstract_one(
    tmp_path: Path, abstract: Listener
) -> None:
    path = Listener(str(tmp_path / "notify"))
    for listener in (path, abstract):
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": listener.address})
        notifier.send(READY=1, STATUS="leader, term 2, leader 1")
        assert listener.message() == {"READY": "1", "STATUS": "leader, term 2, leader 1"}
        notifier.close()
    path.sock.close()


@pytest.mark.parametrize(
    ("env", "period_s"),
    [
        ({"WATCHDOG_USEC": "4000000"}, 4.0),
        ({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}, 4.0),
        ({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}, None),  # another process's
        ({"WATCHDOG_USEC": "0"}, None),
        ({}, None),
    ],
)
def test_the_watchdog_watches_only_this_process(env: dict[str, str], period_s: float) -> None:
    assert Notifier.from_environment({"NOTIFY_SOCKET": "@x"} | env).watchdog_s == period_s


def test_pings_come_at_half_the_watchdog_period(abstract: Listener) -> None:
    notifier = Notifier.from_environment(
        {"NOTIFY_SOCKET": abstract.address, "WATCHDOG_USEC": "1000000"}
    )

    async def ping_for(seconds: float) -> None:
        pinging = asyncio.create_task(notifier.keep_alive())
        await asyncio.sleep(seconds)
        pinging.cancel()

    asyncio.run(ping_for(1.75))  # pings due at 0, 0.5, 1 and 1.5 s; a busy loop sends fewer
    abstract.sock.setblocking(False)
    pings = []
    with contextlib.suppress(BlockingIOError):
        while True:
            pings.append(abstract.sock.recv(4096))
    assert set(pings) == {b"WATCHDOG=1"}
    assert 3 <= len(pings) <= 4, pings  # a ping every full period would be 2


def test_a_send_error_is_logged_once_and_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    for _ in range(3):
        notifier.send(WATCHDOG=1)
    warnings = [r for r in caplog.records if "cannot notify systemd" in r.getMessage()]
    assert len(warnings) == 1


def test_a_real_node_is_ready_once_it_serves_reports_leadership_and_stops(
    tmp_path: Path, abstract: Listener
) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = os.environ | {
        "NOTIFY_SOCKET": abstract.address,
        "WATCHDOG_USEC": "1000000",
        "CHAT_NODE_ID": "1",
        "CHAT_CLUSTER": f"1={address}",
        "CHAT_DATA_DIR": str(tmp_path / "data"),
    }
    node = subprocess.Popen(
        [sys.executable, "-m", "chatnode.main"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        ready, before = abstract.until("READY")
        assert ready["READY"] == "1"
        assert all(m == {"WATCHDOG": "1"} for m in before)
        # Ready means serving: the status call needs no retry.
        status = asyncio.run(status_call()(address, 5))
        assert status.node_id == 1
        statuses = [abstract.until("STATUS")[0]["STATUS"]]
        while not statuses[-1].startswith("leader,"):
            statuses.append(abstract.until("STATUS")[0]["STATUS"])
        assert re.fullmatch(r"leader, term [1-9]\d*, leader 1", statuses[-1]), statuses
        pings = [abstract.message(2) for _ in range(2)]
        assert pings == [{"WATCHDOG": "1"}] * 2
        node.send_signal(signal.SIGTERM)
        stopping, _ = abstract.until("STOPPING")
        assert stopping == {"STOPPING": "1", "STATUS": "draining calls"}
        assert node.wait(20) == 0
    finally:
        node.kill()
        node.wait()
        node.stderr.close()


@pytest.mark.timeout(60)  # the read of its stderr until it serves
def test_an_aborted_node_writes_its_stacks_to_the_journal(tmp_path: Path) -> None:
    """What the watchdog's SIGABRT leaves for the operator: where the loop was."""
    address = f"127.0.0.1:{free_port()}"
    env = os.environ | {"CHAT_NODE_ID": "1", "CHAT_CLUSTER": f"1={address}"}
    node = subprocess.Popen(
        [sys.executable, "-m", "chatnode.main", "--data-dir", str(tmp_path / "data")],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in node.stderr:
            if "serving on" in line:
                break
        node.send_signal(signal.SIGABRT)
        _, journal = node.communicate(timeout=20)
        assert node.returncode == -signal.SIGABRT
        assert "Fatal Python error: Aborted" in journal
        assert 'File "' in journal and "asyncio" in journal, journal
    finally:
        node.kill()
        node.wait()
