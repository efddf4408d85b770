"""A follower that missed entries the leader has compacted away catches up by snapshot."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import grpc

from chatnode.local_cluster import Cluster, local_cluster
from proto import chat_pb2 as pb
from proto import chat_pb2_grpc
from proto import replication_pb2 as rpb
from tests.support.nodes import PASSWORD
from tests.support.waits import wait_until

KEEP = 20
MESSAGES = 150


def first_log_index(data_dir: Path) -> int:
    with closing(sqlite3.connect(f"file:{data_dir / 'log.db'}?mode=ro", uri=True)) as db:
        return db.execute("SELECT coalesce(min(idx), 0) FROM log").fetchone()[0]


def login(stub: chat_pb2_grpc.ChatServiceStub, name: str) -> tuple[tuple[str, str], ...]:
    reply = stub.Login(pb.LoginRequest(username=name, password=PASSWORD), timeout=10)
    return (("authorization", f"Bearer {reply.session_token}"),)


def in_sync(cluster: Cluster, leader: int, node_id: int) -> bool:
    status = cluster.status(leader)
    return status is not None and any(m.id == node_id and m.in_sync for m in status.members)


def test_lagging_follower_installs_snapshot_and_serves_everything(tmp_path: Path) -> None:
    extra = ("--log-keep-entries", str(KEEP), "--lease-ms", "600", "--heartbeat-ms", "60")
    with local_cluster(tmp_path, size=3, extra_args=extra) as cluster:
        leader = cluster.wait_for_leader()
        lagger = next(i for i in cluster.nodes if i != leader)
        cluster.nodes[lagger].kill()
        with grpc.insecure_channel(cluster.nodes[leader].address) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            stub.CreateAccount(pb.CreateAccountRequest(username="sink", password=PASSWORD))
            auth = login(stub, "sink")
            sent = [
                stub.SendMessage(
                    pb.SendMessageRequest(recipient="sink", body=f"m{i}"), metadata=auth, timeout=10
                ).message_id
                for i in range(MESSAGES)
            ]
        leader_dir = cluster.nodes[leader].data_dir
        wait_until(lambda: first_log_index(leader_dir) > sent[0], "the leader compacts its log")

        cluster.nodes[lagger].start()
        wait_until(lambda: in_sync(cluster, leader, lagger), "the restarted node is in sync")
        assert "installed snapshot at index" in cluster.nodes[lagger].log_text()

        cluster.admin(leader, "TransferLeader", rpb.TransferLeaderRequest(id=lagger))
        with grpc.insecure_channel(cluster.nodes[lagger].address) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            wait_until(lambda: cluster.status(lagger).role == "leader", "the transfer completes")
            auth = login(stub, "sink")
            read = stub.ReadMessages(pb.ReadMessagesRequest(limit=1000), metadata=auth, timeout=10)
    assert [m.id for m in read.messages] == sent
