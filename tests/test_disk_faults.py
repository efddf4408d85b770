"""Faults nobody sees from outside end the process with one clear line, never a zombie node.

A background task that dies (here: applying a committed entry raises) must
not leave a node that keeps its lease and answers nothing: it exits with
status 1 and one ``chatnode: fatal:`` line, which is what systemd's
``Restart=on-failure`` acts on. A database file that is not one stops the
node at start the same way. (A full disk is waited out instead:
tests/test_disk_full.py.)
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import grpc
import pytest

from proto import chat_pb2 as pb
from proto import chat_pb2_grpc
from tests.cluster import local_cluster
from tests.conftest import PASSWORD

pytestmark = pytest.mark.slow
EXIT_WITHIN_S = 30.0
INJECTED_FAULT = """CREATE TRIGGER injected_fault BEFORE INSERT ON messages
    BEGIN SELECT RAISE(ABORT, 'injected apply error'); END"""


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
