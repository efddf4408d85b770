"""Faults nobody sees from outside end the process with one clear line, never a zombie node.

A background task that dies (here: applying a committed entry raises) must
not leave a node that keeps its lease and answers nothing: it exits with
status 1 and one ``chatnode: fatal:`` line, which is what systemd's
``Restart=on-failure`` acts on. A database file that is not one stops the
node at start the same way. (A full disk is waited out instead:
tests/cluster/test_disk_full.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import grpc
import pytest

from chatnode.local_cluster import local_cluster
from proto import chat_pb2 as pb
from proto import chat_pb2_grpc
from proto import replication_pb2 as rpb
from tests.support.faults import (
    NODE_ARGS,
    WAIT_S,
    Load,
    Members,
    deadline_loop,
    settle,
    sign_up,
    verify_inbox,
    wait_in_sync,
)
from tests.support.nodes import PASSWORD

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
        damage(node.data_dir / damaged)
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


async def test_a_node_with_a_damaged_log_is_rebuilt_from_the_others(tmp_path: Path) -> None:
    """The documented way back (docs/design.md, "Rebuilding a node"): remove the member,
    move its damaged data away, add it back and start it with --join; it copies everything
    from the leader. (Restarting it empty without the removal would leave the leader's
    record of what it holds stale: it would wait for entries it has lost.)"""
    with local_cluster(tmp_path, size=3, extra_args=NODE_ARGS) as cluster:
        members = Members(cluster)
        try:
            auth = await sign_up(members, "sink")
            await settle(members, "sink")
            load = Load(members, auth, "sink", writers=2).start()
            await load.run_phase("before", 40)
            await load.stop()
            leader = await members.find_leader()
            damaged = next(i for i in cluster.nodes if i != leader)
            node = cluster.nodes[damaged]
            node.kill()
            await asyncio.to_thread(damage, node.data_dir / "log.db")
            node.start()
            assert await asyncio.to_thread(node.wait, EXIT_WITHIN_S) == 1
            cluster.admin(leader, "RemoveMember", rpb.RemoveMemberRequest(id=damaged))
            async for _ in deadline_loop(WAIT_S, f"the removal of node {damaged} commits"):
                status = await members.status(leader)
                if status is not None and status.commit_index >= status.config_epoch:
                    break
            node.data_dir.rename(node.data_dir.with_name(f"{node.data_dir.name}.damaged"))
            add = rpb.AddMemberRequest(id=damaged, address=node.address)
            cluster.admin(leader, "AddMember", add, timeout=WAIT_S)
            node.args.append("--join")
            node.start()
            await wait_in_sync(members, damaged)
            await verify_inbox(members, load, "sink", auth)
        finally:
            await members.close()


def damage(path: Path) -> None:
    path.write_bytes(b"this is not a database, whatever it was" * 100)
    for leftover in path.parent.glob(f"{path.name}-*"):
        leftover.unlink()
