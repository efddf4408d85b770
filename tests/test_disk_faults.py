"""Faults nobody sees from outside end the process with one clear line, never a zombie node.

A node whose disk fills up cannot make writes durable; it must not keep
answering health checks and status calls while it commits nothing. The test
gives a real node a 4 MiB file system (tmpfs; needs root, skipped otherwise),
writes until it is full, and expects the process to exit with status 1 and
one ``chatnode: fatal:`` line, which is what systemd's ``Restart=on-failure``
acts on. A database file that is not one stops the node at start the same way.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from proto import chat_pb2 as pb
from proto import chat_pb2_grpc
from tests.cluster import local_cluster
from tests.conftest import PASSWORD

pytestmark = pytest.mark.slow
BODY = "x" * 60_000
EXIT_WITHIN_S = 30.0
INJECTED_FAULT = """CREATE TRIGGER injected_fault BEFORE INSERT ON messages
    BEGIN SELECT RAISE(ABORT, 'injected apply error'); END"""


@contextlib.contextmanager
def small_disk(folder: Path, size: str = "4m") -> Iterator[Path]:
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_stops_the_node_with_one_fatal_line(tmp_path: Path) -> None:
    with (
        small_disk(tmp_path / "disk") as disk,
        local_cluster(tmp_path, size=1, data_root=disk) as cluster,
    ):
        node = cluster.nodes[1]
        with grpc.insecure_channel(node.address) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            stub.CreateAccount(pb.CreateAccountRequest(username="sink", password=PASSWORD))
            token = stub.Login(pb.LoginRequest(username="sink", password=PASSWORD)).session_token
            auth = (("authorization", f"Bearer {token}"),)
            for _ in range(200):  # 12 MB into 4 MiB: the disk fills long before
                if not node.running:
                    break
                with contextlib.suppress(grpc.RpcError):
                    request = pb.SendMessageRequest(recipient="sink", body=BODY)
                    stub.SendMessage(request, metadata=auth, timeout=5)
        assert node.wait(timeout=EXIT_WITHIN_S) == 1
        log = node.log_text()
        fatal = [line for line in log.splitlines() if line.startswith("chatnode: fatal:")]
        assert len(fatal) == 1 and "exiting for a restart" in fatal[0], log[-3000:]
        assert "Traceback" not in log, log[-3000:]


@pytest.mark.parametrize("damaged", ["log.db", "state.db"])
def test_a_corrupt_database_stops_the_node_at_start_with_one_line(
    tmp_path: Path, damaged: str
) -> None:
    with local_cluster(tmp_path, size=1) as cluster:
        node = cluster.nodes[1]
        node.kill()
        (node.data_dir / damaged).write_bytes(b"this is not a database, whatever it was" * 100)
        for leftover in node.data_dir.glob(f"{damaged}-*"):
            leftover.unlink()
        node.log_path.write_text("")
        node.start()
        assert node.wait(timeout=EXIT_WITHIN_S) == 1
    lines = node.log_text().strip().splitlines()
    assert lines == [f"chatnode: cannot use the data in {node.data_dir}: file is not a database"]


def test_an_apply_error_stops_the_node_with_its_traceback_and_a_restart_recovers(
    tmp_path: Path,
) -> None:
    """A bug-shaped fault: applying a committed entry raises. The node must not keep its
    lease and answer nothing; it logs the traceback, says so in one line and exits 1."""
    with local_cluster(tmp_path, size=1) as cluster:
        node = cluster.nodes[1]
        with grpc.insecure_channel(node.address) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            stub.CreateAccount(pb.CreateAccountRequest(username="sink", password=PASSWORD))
            token = stub.Login(pb.LoginRequest(username="sink", password=PASSWORD)).session_token
            auth = (("authorization", f"Bearer {token}"),)
            with contextlib.closing(sqlite3.connect(node.data_dir / "state.db")) as db:
                db.execute(INJECTED_FAULT)
            with pytest.raises(grpc.RpcError):
                request = pb.SendMessageRequest(recipient="sink", body="never applied")
                stub.SendMessage(request, metadata=auth, timeout=5)
        assert node.wait(timeout=EXIT_WITHIN_S) == 1
        log = node.log_text()
        assert "Traceback" in log and "IntegrityError: injected apply error" in log
        assert log.strip().splitlines()[-1] == (
            "chatnode: fatal: applier stopped (IntegrityError: injected apply error); "
            "exiting for a restart"
        )
        with contextlib.closing(sqlite3.connect(node.data_dir / "state.db")) as db:
            db.execute("DROP TRIGGER injected_fault")
        node.start()
        cluster.wait_for_leader()
        with grpc.insecure_channel(node.address) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            login = stub.Login(pb.LoginRequest(username="sink", password=PASSWORD), timeout=10)
        assert login.unread_count == 1  # committed before the fault, applied on the replay
