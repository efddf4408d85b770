"""A member whose wall clock is hours off leads, with real processes: nobody is logged out,
no retry acts twice, and message times stay real.

Node 3 runs under libfaketime with its wall clock moved (its monotonic clock left
alone, as with a hardware clock kept in local time). Leadership moves 1 -> 3 -> 1
while users log in, send and retry. The cluster clock (chatnode/cluster_clock.py)
decides every time the state machine judges by, so node 3's wall clock never does.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from chatnode.local_cluster import Cluster, local_cluster
from proto import chat_pb2 as pb
from proto import chat_pb2_grpc
from proto import replication_pb2 as rpb
from tests.support.nodes import PASSWORD

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
if not LIBFAKETIME.exists():
    pytest.skip(f"no {LIBFAKETIME} (Debian's faketime package)", allow_module_level=True)

WAIT_S = 20.0
SKEWED = 3
Auth = tuple[tuple[str, str], ...]


def stub(cluster: Cluster, node_id: int) -> chat_pb2_grpc.ChatServiceStub:
    channel = grpc.insecure_channel(cluster.nodes[node_id].address)
    return chat_pb2_grpc.ChatServiceStub(channel)


def lead(cluster: Cluster, node_id: int) -> None:
    """Move leadership to node_id and wait until it serves."""
    deadline = time.monotonic() + WAIT_S
    while True:
        leader = cluster.wait_for_leader()
        if leader == node_id:
            status = cluster.status(node_id)
            if status is not None and status.role == "leader":
                return
        else:  # refused while node_id is not in sync yet, or leadership moves: ask again
            with contextlib.suppress(grpc.RpcError):
                cluster.admin(leader, "TransferLeader", rpb.TransferLeaderRequest(id=node_id))
        if time.monotonic() > deadline:
            raise TimeoutError(f"node {node_id} did not take the lead:\n{cluster.log_tails()}")
        time.sleep(0.2)


def sign_in(chat: chat_pb2_grpc.ChatServiceStub, name: str) -> Auth:
    chat.CreateAccount(pb.CreateAccountRequest(username=name, password=PASSWORD), timeout=10)
    return login(chat, name)


def login(chat: chat_pb2_grpc.ChatServiceStub, name: str) -> Auth:
    reply = chat.Login(pb.LoginRequest(username=name, password=PASSWORD), timeout=10)
    return (("authorization", f"Bearer {reply.session_token}"),)


def send(chat: chat_pb2_grpc.ChatServiceStub, auth: Auth, body: str, request_id: str = "") -> int:
    request = pb.SendMessageRequest(recipient="carol", body=body, request_id=request_id)
    return chat.SendMessage(request, metadata=auth, timeout=10).message_id


SKEWS = {"+2h": 2 * 3_600_000, "-2h": -2 * 3_600_000, "+25h": 25 * 3_600_000}


@pytest.fixture(params=[("+2h", "1h"), ("-2h", "1h"), ("+25h", "30d")], ids=str)
def skewed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """Three nodes with --session-ttl TTL; node 3's wall clock OFFSET from real time."""
    offset, ttl = request.param
    request.node.skew_ms = SKEWS[offset]
    with local_cluster(tmp_path, size=3, extra_args=["--session-ttl", ttl]) as cluster:
        node = cluster.nodes[SKEWED]
        node.kill()
        node.env = {
            "LD_PRELOAD": str(LIBFAKETIME),
            "FAKETIME": offset,
            "DONT_FAKE_MONOTONIC": "1",
        }
        node.start()
        yield cluster


def offset_seen(cluster: Cluster, leader: int, member: int) -> int | None:
    status = cluster.status(leader)
    for m in status.members if status is not None else ():
        if m.id == member and m.HasField("clock_offset_ms"):
            return m.clock_offset_ms
    return None


def test_a_leader_hours_off_logs_nobody_out_and_acts_once(
    skewed: Cluster, request: pytest.FixtureRequest
) -> None:
    cluster = skewed
    started_ms = time.time_ns() // 1_000_000
    lead(cluster, 1)
    deadline = time.monotonic() + WAIT_S
    while (seen := offset_seen(cluster, 1, SKEWED)) is None or abs(
        seen - request.node.skew_ms
    ) > 2000:
        assert time.monotonic() < deadline, f"node 1 measured node 3's offset as {seen} ms"
        time.sleep(0.2)
    assert "wall clock is" in cluster.nodes[1].log_text(), "the offset was not logged"
    one = stub(cluster, 1)
    alice = sign_in(one, "alice")
    sign_in(one, "carol")
    first = send(one, alice, "under node 1", request_id="R")

    lead(cluster, SKEWED)
    three = stub(cluster, SKEWED)
    assert send(three, alice, "under node 3") > first, "alice was logged out"
    assert send(three, alice, "under node 1", request_id="R") == first, "a retry acted twice"
    bob = sign_in(three, "bob")  # a session opened under the skewed leader

    lead(cluster, 1)
    assert send(one, bob, "bob under node 1") > first, "bob was logged out"
    assert send(one, alice, "under node 1", request_id="R") == first
    one.ListAccounts(pb.ListAccountsRequest(), metadata=alice, timeout=10)

    carol = login(one, "carol")
    inbox = one.ReadMessages(pb.ReadMessagesRequest(limit=100), metadata=carol, timeout=10)
    bodies = [m.body for m in inbox.messages]
    assert bodies == ["under node 1", "under node 3", "bob under node 1"]
    sent_at = [m.sent_at_unix_ms for m in inbox.messages]
    now_ms = time.time_ns() // 1_000_000
    assert sent_at == sorted(sent_at)
    assert started_ms - 1000 <= sent_at[0] and sent_at[-1] <= now_ms + 1000, (
        f"message times left real time: {sent_at} not within [{started_ms}, {now_ms}]"
    )
