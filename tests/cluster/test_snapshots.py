"""A follower that missed entries the leader has compacted away catches up by snapshot."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
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
SHORT_LOG = ("--log-keep-entries", str(KEEP), "--lease-ms", "600", "--heartbeat-ms", "60")


def first_log_index(data_dir: Path) -> int:
    with closing(sqlite3.connect(f"file:{data_dir / 'log.db'}?mode=ro", uri=True)) as db:
        return db.execute("SELECT coalesce(min(idx), 0) FROM log").fetchone()[0]


def login(stub: chat_pb2_grpc.ChatServiceStub, name: str) -> tuple[tuple[str, str], ...]:
    reply = stub.Login(pb.LoginRequest(username=name, password=PASSWORD), timeout=10)
    return (("authorization", f"Bearer {reply.session_token}"),)


def in_sync(cluster: Cluster, leader: int, node_id: int) -> bool:
    status = cluster.status(leader)
    return status is not None and any(m.id == node_id and m.in_sync for m in status.members)


@contextmanager
def follower_down(tmp_path: Path) -> Iterator[tuple[Cluster, int, int]]:
    """Three nodes keeping a short log, one follower killed: (cluster, leader, that one)."""
    with local_cluster(tmp_path, size=3, extra_args=SHORT_LOG) as cluster:
        leader = cluster.wait_for_leader()
        lagger = next(i for i in cluster.nodes if i != leader)
        cluster.nodes[lagger].kill()
        yield cluster, leader, lagger


def sink(stub: chat_pb2_grpc.ChatServiceStub) -> tuple[tuple[str, str], ...]:
    stub.CreateAccount(pb.CreateAccountRequest(username="sink", password=PASSWORD))
    return login(stub, "sink")


def catch_up(cluster: Cluster, leader: int, lagger: int) -> None:
    """Restart the lagging node once the leader compacted past it; wait until it is in
    sync, by snapshot."""
    leader_dir = cluster.nodes[leader].data_dir
    wait_until(lambda: first_log_index(leader_dir) > 2 * KEEP, "the leader compacts its log")
    cluster.nodes[lagger].start()
    wait_until(lambda: in_sync(cluster, leader, lagger), "the restarted node is in sync")
    assert "installed snapshot at index" in cluster.nodes[lagger].log_text()


def sink_ids_under(cluster: Cluster, leader: int, lagger: int) -> list[int]:
    """Make the caught-up node lead; every message id the sink has there, in order."""
    cluster.admin(leader, "TransferLeader", rpb.TransferLeaderRequest(id=lagger))
    wait_until(lambda: cluster.status(lagger).role == "leader", "the transfer completes")
    stored: list[int] = []
    with grpc.insecure_channel(cluster.nodes[lagger].address) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        auth = login(stub, "sink")
        while True:
            page = stub.ReadMessages(pb.ReadMessagesRequest(limit=1000), metadata=auth, timeout=10)
            stored += [m.id for m in page.messages]
            if not page.remaining_unread:
                return stored


def test_lagging_follower_installs_snapshot_and_serves_everything(tmp_path: Path) -> None:
    with follower_down(tmp_path) as (cluster, leader, lagger):
        with grpc.insecure_channel(cluster.nodes[leader].address) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            auth = sink(stub)
            sent = [
                stub.SendMessage(
                    pb.SendMessageRequest(recipient="sink", body=f"m{i}"), metadata=auth, timeout=10
                ).message_id
                for i in range(MESSAGES)
            ]
        catch_up(cluster, leader, lagger)
        assert sink_ids_under(cluster, leader, lagger) == sent


def test_a_follower_catches_up_by_snapshot_while_writes_go_on(tmp_path: Path) -> None:
    """The leader copies its state for the lagging follower without stopping its applies:
    a writer sending throughout is answered throughout, every write lands once, and the
    follower ends with all of them. ``pytest -s`` prints the longest wait for an ack."""
    with follower_down(tmp_path) as (cluster, leader, lagger):
        with grpc.insecure_channel(cluster.nodes[leader].address) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            auth = sink(stub)
            note = pb.SendMessageRequest(recipient="sink", body="x" * 16_384)
            acks: list[tuple[float, float, int]] = []  # (sent, acked, message id)
            stop = threading.Event()

            def write() -> None:
                while not stop.is_set():
                    started = time.monotonic()
                    reply = stub.SendMessage(note, metadata=auth, timeout=10)
                    acks.append((started, time.monotonic(), reply.message_id))

            writer = threading.Thread(target=write, name="writer")
            writer.start()
            try:
                wait_until(lambda: len(acks) >= 600, "600 writes before the restart")
                restarted = time.monotonic()
                catch_up(cluster, leader, lagger)
                caught_up = time.monotonic()
                wait_until(lambda: acks[-1][1] > caught_up + 0.5, "writes after the catch-up")
            finally:
                stop.set()
                writer.join(timeout=30)
        during = [ack for ack in acks if restarted <= ack[1] <= caught_up]
        assert during, "no write was acknowledged while the follower caught up"
        longest = max(acked - sent for sent, acked, _ in acks)
        print(f"\n{len(acks)} writes, {len(during)} acked during the catch-up; "
              f"longest wait for an ack {longest * 1000:.0f} ms")  # fmt: skip
        ids = [message_id for _, _, message_id in acks]
        assert sink_ids_under(cluster, leader, lagger) == ids, "a write lost or repeated"
