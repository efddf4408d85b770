"""What three real nodes serve on ``--metrics-listen``: state gauges, lag, RPCs, streams.

One cluster serves the whole module (each test reads differences, or values
that hold at rest), scraped over HTTP as Prometheus would.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator

import grpc
import pytest

from chatnode.local_cluster import Cluster, NodeProcess, local_cluster
from proto import chat_pb2 as pb
from proto import chat_pb2_grpc
from tests.support.nodes import PASSWORD, signup

WAIT_S = 10.0
CHAT = "chat.v1.ChatService"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with local_cluster(tmp_path_factory.mktemp("metrics"), size=3, metrics=True) as running:
        running.wait_for_leader()
        yield running


@pytest.fixture
async def leader(cluster: Cluster) -> NodeProcess:
    return cluster.nodes[cluster.wait_for_leader()]


@pytest.fixture
async def stub(leader: NodeProcess) -> AsyncIterator[chat_pb2_grpc.ChatServiceStub]:
    async with grpc.aio.insecure_channel(leader.address) as channel:
        yield chat_pb2_grpc.ChatServiceStub(channel)


def value(node: NodeProcess, name: str, **labels: str) -> float | None:
    """One sample of node's metrics, None if it serves no such sample."""
    return node.metric_samples(name).get(tuple(sorted(labels.items())))


async def eventually(check: Callable[[], bool], what: str) -> None:
    """Scrape until check holds (no event tells when a gauge moved), for WAIT_S at most."""
    deadline = time.monotonic() + WAIT_S
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting until {what}")
        await asyncio.sleep(0.05)


def rpcs(node: NodeProcess, method: str, code: str, grpc_type: str = "unary") -> float:
    labels = {"grpc_type": grpc_type, "grpc_service": CHAT, "grpc_method": method}
    return value(node, "grpc_server_handled_total", **labels, grpc_code=code) or 0.0


def ended_calls(node: NodeProcess, method: str, grpc_type: str) -> float:
    """Calls of method counted as ended, with any code."""
    return sum(rpcs(node, method, code.name, grpc_type) for code in grpc.StatusCode)


async def test_each_node_reports_its_role_term_leader_and_configuration(
    cluster: Cluster, leader: NodeProcess
) -> None:
    status = cluster.status(leader.node_id)
    assert status is not None
    for node in cluster.nodes.values():
        leading = node is leader
        assert value(node, "chat_node_id") == node.node_id
        assert value(node, "chat_is_leader") == (1 if leading else 0)
        assert value(node, "chat_term") == status.term >= 1
        assert value(node, "chat_leader_id") == leader.node_id
        assert value(node, "chat_members") == 3
        assert value(node, "chat_isr_size") == 3
        assert value(node, "chat_min_insync") == status.min_insync
        assert value(node, "chat_disk_fault") == 0
        assert value(node, "chat_proposals_in_flight") == 0
        assert value(node, "chat_password_hash_queue") == 0
        assert (value(node, "process_resident_memory_bytes") or 0) > 10 << 20
        lags = node.metric_samples("chat_follower_lag_entries")
        followers = {(("follower", str(i)),) for i in cluster.nodes if i != node.node_id}
        assert set(lags) == (followers if leading else set())


async def test_commit_and_applied_indexes_advance_after_a_write(
    cluster: Cluster, leader: NodeProcess, stub: chat_pb2_grpc.ChatServiceStub
) -> None:
    before = {i: value(n, "chat_applied_index") or 0 for i, n in cluster.nodes.items()}
    fsyncs = value(leader, "chat_log_fsync_seconds_count") or 0
    applies = value(leader, "chat_apply_seconds_count") or 0
    await stub.CreateAccount(pb.CreateAccountRequest(username="writer", password=PASSWORD))
    commit = value(leader, "chat_commit_index") or 0
    assert commit > before[leader.node_id]
    assert (value(leader, "chat_applied_index") or 0) >= commit  # applied before it answered
    assert (value(leader, "chat_log_fsync_seconds_count") or 0) > fsyncs
    assert (value(leader, "chat_apply_seconds_count") or 0) > applies
    for node in cluster.nodes.values():
        await eventually(
            lambda n=node: (value(n, "chat_applied_index") or 0) >= commit,
            f"node {node.node_id} applied index {commit}",
        )
        assert (value(node, "chat_commit_index") or 0) >= commit


async def test_the_leader_reports_each_followers_lag_until_it_catches_up(
    cluster: Cluster, leader: NodeProcess, stub: chat_pb2_grpc.ChatServiceStub
) -> None:
    await stub.CreateAccount(pb.CreateAccountRequest(username="lagger", password=PASSWORD))

    def caught_up() -> bool:
        entries = leader.metric_samples("chat_follower_lag_entries")
        seconds = leader.metric_samples("chat_follower_lag_seconds")
        return len(entries) == 2 and set(entries.values()) == {0} == set(seconds.values())

    await eventually(caught_up, "both followers hold the leader's whole log")
    offsets = leader.metric_samples("chat_peer_clock_offset_seconds")
    assert {dict(labels)["peer"] for labels in offsets} == {
        str(i) for i in cluster.nodes if i != leader.node_id
    }


async def test_a_stopped_follower_lags_in_entries_and_in_seconds(
    cluster: Cluster, leader: NodeProcess, stub: chat_pb2_grpc.ChatServiceStub
) -> None:
    follower = next(n for n in cluster.nodes.values() if n is not leader)
    label = str(follower.node_id)
    follower.signal(signal.SIGSTOP)  # it holds its log but answers nothing
    try:
        for i in range(3):
            await stub.CreateAccount(pb.CreateAccountRequest(username=f"l{i}", password=PASSWORD))
        lag = value(leader, "chat_follower_lag_entries", follower=label)
        assert lag is not None and lag >= 3
        await eventually(
            lambda: (value(leader, "chat_follower_lag_seconds", follower=label) or 0) > 0.5,
            f"node {label} lags by more than half a second",
        )
    finally:
        follower.signal(signal.SIGCONT)
    await eventually(
        lambda: value(leader, "chat_follower_lag_seconds", follower=label) == 0,
        f"node {label} caught up again",
    )


async def test_rpcs_are_counted_by_method_and_status_code(
    leader: NodeProcess, stub: chat_pb2_grpc.ChatServiceStub
) -> None:
    await stub.CreateAccount(pb.CreateAccountRequest(username="counted", password=PASSWORD))
    refused, ok = rpcs(leader, "Login", "UNAUTHENTICATED"), rpcs(leader, "Login", "OK")
    started = value(
        leader,
        "grpc_server_started_total",
        grpc_type="unary",
        grpc_service=CHAT,
        grpc_method="Login",
    )
    with pytest.raises(grpc.aio.AioRpcError) as refusal:
        await stub.Login(pb.LoginRequest(username="counted", password="wrong password"))
    assert refusal.value.code() is grpc.StatusCode.UNAUTHENTICATED
    await stub.Login(pb.LoginRequest(username="counted", password=PASSWORD))
    assert rpcs(leader, "Login", "UNAUTHENTICATED") == refused + 1
    assert rpcs(leader, "Login", "OK") == ok + 1
    assert (
        value(
            leader,
            "grpc_server_started_total",
            grpc_type="unary",
            grpc_service=CHAT,
            grpc_method="Login",
        )
        == (started or 0) + 2
    )
    handling = value(
        leader,
        "grpc_server_handling_seconds_count",
        grpc_type="unary",
        grpc_service=CHAT,
        grpc_method="Login",
    )
    assert handling is not None and handling >= 2


@pytest.mark.parametrize("kind", ["subscribe", "session"])
async def test_the_open_streams_gauge_goes_up_and_back_down(
    leader: NodeProcess, stub: chat_pb2_grpc.ChatServiceStub, kind: str
) -> None:
    auth = await signup(stub, f"streamer-{kind}")
    grpc_type = "server_stream" if kind == "subscribe" else "bidi_stream"
    method = "Subscribe" if kind == "subscribe" else "Session"
    # A client's cancel ends the call CANCELLED, or OK when the server saw the request
    # stream end first (a race on the wire; seen once in CI): it is counted once either way.
    ended = ended_calls(leader, method, grpc_type)
    assert value(leader, "chat_open_streams", kind=kind) == 0
    call = (
        stub.Subscribe(pb.SubscribeRequest(), metadata=auth)
        if kind == "subscribe"
        else stub.Session(metadata=auth)
    )
    await asyncio.wait_for(call.read(), timeout=WAIT_S)  # the first event: the stream is open
    assert value(leader, "chat_open_streams", kind=kind) == 1
    call.cancel()
    await eventually(
        lambda: value(leader, "chat_open_streams", kind=kind) == 0, f"the {kind} stream closed"
    )
    await eventually(
        lambda: ended_calls(leader, method, grpc_type) == ended + 1,
        f"the cancelled {method} is counted",
    )


def session_calls(node: NodeProcess, method: str, code: str) -> float:
    return value(node, "chat_session_calls_total", method=method, code=code) or 0.0


async def test_calls_on_a_session_stream_are_counted_by_method_and_code(
    leader: NodeProcess, stub: chat_pb2_grpc.ChatServiceStub
) -> None:
    auth = await signup(stub, "framer")
    listed = session_calls(leader, "ListAccounts", "OK")
    unknown = session_calls(leader, "SendMessage", "NOT_FOUND")
    timed = value(leader, "chat_session_call_seconds_count", method="ListAccounts") or 0
    call = stub.Session(metadata=auth)
    await asyncio.wait_for(call.read(), timeout=WAIT_S)  # the stream is open
    await call.write(pb.ClientFrame(request_id="a", list_accounts=pb.ListAccountsRequest()))
    nobody = pb.SendMessageRequest(recipient="nobody-here", body="hi")
    await call.write(pb.ClientFrame(request_id="b", send_message=nobody))
    replies = [await asyncio.wait_for(call.read(), timeout=WAIT_S) for _ in range(2)]
    assert [r.WhichOneof("event") for r in replies] == ["list_accounts", "error"]
    call.cancel()
    assert session_calls(leader, "ListAccounts", "OK") == listed + 1
    assert session_calls(leader, "SendMessage", "NOT_FOUND") == unknown + 1
    assert value(leader, "chat_session_call_seconds_count", method="ListAccounts") == timed + 1
