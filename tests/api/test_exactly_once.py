"""Exactly once for every mutating call (docs/api.md, "Exactly once"), over gRPC.

A retry with the same request_id by the same user, for the same kind of call,
returns the first result and changes nothing: one after the other, two at once
(both proposed before either is applied), and on a new leader.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from chatnode import ops
from chatnode.local_cluster import free_port
from chatnode.server import ChatNode, NodeConfig
from proto import chat_pb2 as pb
from proto import chat_pb2_grpc
from proto.credentials import ClusterSecret
from tests.support.nodes import (
    PASSWORD,
    elected,
    in_process_cluster,
    signup,
    wait_until_serving,
)

Stub = chat_pb2_grpc.ChatServiceStub
Auth = tuple[tuple[str, str], ...]
CODE = grpc.StatusCode
TIMES = 4  # attempts of one request sent at once
T = TypeVar("T")
CALL_TIMEOUT_S = 10


async def code_of(call: Awaitable[object]) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code()


async def inbox(stub: Stub, recipient: str, sender: Auth, count: int) -> list[int]:
    """Send count messages to recipient; their ids."""
    return [
        (
            await stub.SendMessage(
                pb.SendMessageRequest(recipient=recipient, body=f"m{i}"), metadata=sender
            )
        ).message_id
        for i in range(count)
    ]


# -- one after the other, and at once, on one node -----------------------------------------


@pytest.mark.parametrize("at_once", [False, True], ids=["retried", "at_once"])
async def test_read_messages_retried_returns_the_same_batch(
    stub: Stub, node: ChatNode, at_once: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    bob = await signup(stub, "bob")
    ids = await inbox(stub, "bob", await signup(stub, "alice"), 5)
    request = pb.ReadMessagesRequest(limit=2, request_id="read-1")
    replies = await attempts(
        node, lambda: stub.ReadMessages(request, metadata=bob), at_once, monkeypatch
    )
    assert all(reply == replies[0] for reply in replies)
    assert [m.id for m in replies[0].messages] == ids[:2] and replies[0].remaining_unread == 3
    rest = await stub.ReadMessages(pb.ReadMessagesRequest(request_id="read-2"), metadata=bob)
    assert [m.id for m in rest.messages] == ids[2:]  # the first batch was not lost


@pytest.mark.parametrize("at_once", [False, True], ids=["retried", "at_once"])
async def test_mark_read_retried_returns_the_first_count(
    stub: Stub, node: ChatNode, at_once: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    bob = await signup(stub, "bob")
    ids = await inbox(stub, "bob", await signup(stub, "alice"), 2)
    request = pb.MarkReadRequest(message_ids=ids, request_id="mark-1")
    replies = await attempts(
        node, lambda: stub.MarkRead(request, metadata=bob), at_once, monkeypatch
    )
    assert [r.marked_count for r in replies] == [2] * len(replies)
    fresh = pb.MarkReadRequest(message_ids=ids, request_id="mark-2")
    assert (await stub.MarkRead(fresh, metadata=bob)).marked_count == 0


@pytest.mark.parametrize("at_once", [False, True], ids=["retried", "at_once"])
async def test_delete_messages_retried_returns_the_first_count(
    stub: Stub, node: ChatNode, at_once: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    bob = await signup(stub, "bob")
    ids = await inbox(stub, "bob", await signup(stub, "alice"), 3)
    request = pb.DeleteMessagesRequest(message_ids=ids[:2], request_id="del-1")
    replies = await attempts(
        node, lambda: stub.DeleteMessages(request, metadata=bob), at_once, monkeypatch
    )
    assert [r.deleted_count for r in replies] == [2] * len(replies)
    left = await stub.ReadMessages(pb.ReadMessagesRequest(), metadata=bob)
    assert [m.id for m in left.messages] == ids[2:]


@pytest.mark.parametrize("at_once", [False, True], ids=["retried", "at_once"])
async def test_logout_retried_succeeds_although_its_session_is_gone(
    stub: Stub, node: ChatNode, at_once: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    bob = await signup(stub, "bob")
    request = pb.LogoutRequest(request_id="out-1")
    await attempts(node, lambda: stub.Logout(request, metadata=bob), at_once, monkeypatch)
    assert await code_of(stub.ListAccounts(pb.ListAccountsRequest(), metadata=bob)) == (
        CODE.UNAUTHENTICATED
    )
    another = pb.LogoutRequest(request_id="out-2")  # a new request on the ended session
    assert await code_of(stub.Logout(another, metadata=bob)) == CODE.UNAUTHENTICATED


@pytest.mark.parametrize("at_once", [False, True], ids=["retried", "at_once"])
async def test_delete_account_retried_succeeds_and_spares_the_name_registered_again(
    stub: Stub, node: ChatNode, at_once: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    bob = await signup(stub, "bob")
    request = pb.DeleteAccountRequest(password=PASSWORD, request_id="gone-1")
    await attempts(node, lambda: stub.DeleteAccount(request, metadata=bob), at_once, monkeypatch)
    again = await signup(stub, "bob")
    await stub.DeleteAccount(request, metadata=bob)  # one more retry: the first reply
    listed = await stub.ListAccounts(pb.ListAccountsRequest(), metadata=again)
    assert list(listed.usernames) == ["bob"]
    fresh = pb.DeleteAccountRequest(password=PASSWORD, request_id="gone-2")
    assert await code_of(stub.DeleteAccount(fresh, metadata=bob)) == CODE.UNAUTHENTICATED


async def test_concurrent_logins_with_one_request_id_share_the_one_stored_token(
    stub: Stub, node: ChatNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    await stub.CreateAccount(pb.CreateAccountRequest(username="carol", password=PASSWORD))
    login = pb.LoginRequest(username="carol", password=PASSWORD, request_id="in-1")
    replies, proposed = await all_at_once(node, lambda: stub.Login(login), monkeypatch)
    assert len({r.session_token for r in replies}) == 1
    auth = (("authorization", f"Bearer {replies[0].session_token}"),)
    await stub.ListAccounts(pb.ListAccountsRequest(), metadata=auth)
    opened = [op for op in proposed if node.lookup.session(op.token_hash) is not None]
    assert len(opened) == 1  # the other attempts' tokens were never stored
    retry = await stub.Login(login)
    assert retry.session_token == replies[0].session_token


async def attempts(
    node: ChatNode, call: Callable[[], Awaitable[T]], at_once: bool, monkeypatch: pytest.MonkeyPatch
) -> list[T]:
    """TIMES attempts of one request: one after the other, or at once."""
    if not at_once:
        return [await call() for _ in range(TIMES)]
    replies, _ = await all_at_once(node, call, monkeypatch)
    return replies


async def all_at_once(
    node: ChatNode, call: Callable[[], Awaitable[T]], monkeypatch: pytest.MonkeyPatch
) -> tuple[list[T], list[ops.Op]]:
    """TIMES attempts, each proposed before any is applied; the replies and the ops.

    Proposals are held until all TIMES have come, so every attempt found no stored
    reply and the state machine must answer all but the first from the first's."""
    propose = node.applier.submit
    held: list[ops.Op] = []
    all_in = asyncio.Event()

    def submit(op: ops.Op) -> asyncio.Future[ops.Result]:
        held.append(op)
        if len(held) == TIMES:
            all_in.set()

        async def when_all_in() -> ops.Result:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await all_in.wait()
            return await propose(op)

        return asyncio.ensure_future(when_all_in())

    with monkeypatch.context() as patched:
        patched.setattr(node.applier, "submit", submit)
        replies = list(await asyncio.gather(*(call() for _ in range(TIMES))))
    assert len(held) == TIMES, "some attempts found a stored reply: they did not run at once"
    return replies, held


# -- on a new leader ------------------------------------------------------------------------


class Deadline(grpc.aio.UnaryUnaryClientInterceptor):
    """Every call gets a deadline: a hung call fails where it hung, not at the test's end."""

    async def intercept_unary_unary(self, continuation, details, request):
        return await continuation(details._replace(timeout=CALL_TIMEOUT_S), request)


@contextlib.asynccontextmanager
async def three_nodes(tmp_path: Path) -> AsyncIterator[tuple[list[ChatNode], ChatNode]]:
    """Three in-process nodes sharing a secret, and the one that leads first."""
    secret = ClusterSecret(secrets.token_bytes(32))
    async with in_process_cluster(tmp_path, lambda i: {"cluster_secret": secret}) as nodes:
        yield nodes, await elected(nodes)


def channel_to(node: ChatNode) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(node.config.address, interceptors=[Deadline()])


async def new_leader(nodes: list[ChatNode], old: ChatNode) -> ChatNode:
    """Move leadership away from old; the node that then leads, once it serves."""
    assert await old.coordinator.hand_over()
    async with asyncio.timeout(10):
        while True:
            for node in nodes:
                if node is not old and node.coordinator.status().role == "leader":
                    await node.coordinator.read_barrier()
                    return node
            await asyncio.sleep(0.02)


async def test_retries_on_a_new_leader_return_the_first_results(tmp_path: Path) -> None:
    async with three_nodes(tmp_path) as (nodes, leader):
        async with channel_to(leader) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            bob = await signup(stub, "bob")
            alice = await signup(stub, "alice")
            ids = await inbox(stub, "bob", alice, 4)
            read = pb.ReadMessagesRequest(limit=2, request_id="r")
            delete = pb.DeleteMessagesRequest(message_ids=ids[1:3], request_id="d")
            mark = pb.MarkReadRequest(message_ids=ids, request_id="m")
            out = pb.LogoutRequest(request_id="o")
            first_read = await stub.ReadMessages(read, metadata=bob)
            first_delete = await stub.DeleteMessages(delete, metadata=bob)
            first_mark = await stub.MarkRead(mark, metadata=bob)
            await stub.Logout(out, metadata=alice)
        moved = await new_leader(nodes, leader)
        async with channel_to(moved) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            retried_read = await stub.ReadMessages(read, metadata=bob)
            assert [m.id for m in first_read.messages] == ids[:2]
            # the same batch, less the message deleted since
            assert [m.id for m in retried_read.messages] == ids[:1]
            assert retried_read.remaining_unread == first_read.remaining_unread
            assert await stub.DeleteMessages(delete, metadata=bob) == first_delete
            assert first_delete.deleted_count == 2
            assert await stub.MarkRead(mark, metadata=bob) == first_mark
            assert first_mark.marked_count == 1
            await stub.Logout(out, metadata=alice)
            left = await stub.ReadMessages(pb.ReadMessagesRequest(), metadata=bob)
            assert list(left.messages) == []
            listed = await stub.ListAccounts(pb.ListAccountsRequest(), metadata=bob)
            assert list(listed.usernames) == ["alice", "bob"]


async def led_again(node: ChatNode, leader: ChatNode) -> None:
    """Move leadership from leader back to node, which led before; return once node leads."""
    leader.coordinator.transfer_leadership(node.config.node_id)
    async with asyncio.timeout(10):
        async for view in node.coordinator.leader_changes():
            if view is not None and view.leader_id == node.config.node_id:
                return


async def test_a_node_leading_again_shows_the_other_leaders_writes_before_its_first_write(
    tmp_path: Path,
) -> None:
    """Writes pass the read barrier once per leadership (docs/design.md, "Serving rules"),
    so a node that led, followed another leader and leads again must pass it anew: its
    state may not have applied yet what the other leader committed (a follower's applies
    linger), here the login whose session the first write comes on. Unary, as a Session
    stream opens with a read barrier of its own."""
    async with three_nodes(tmp_path) as (nodes, leader):
        async with channel_to(leader) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            await signup(stub, "bob")
            alice = await signup(stub, "alice")
            await inbox(stub, "bob", alice, 2)  # writes on this leadership, past its barrier
        other = await new_leader(nodes, leader)
        async with channel_to(other) as channel:
            reply = await chat_pb2_grpc.ChatServiceStub(channel).Login(
                pb.LoginRequest(username="alice", password=PASSWORD)
            )
        again = (("authorization", f"Bearer {reply.session_token}"),)
        await led_again(leader, other)
        async with channel_to(leader) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            sent = await stub.SendMessage(
                pb.SendMessageRequest(recipient="bob", body="back"), metadata=again
            )
            read = await stub.ReadMessages(pb.ReadMessagesRequest(), metadata=alice)
        assert sent.message_id > 0 and list(read.messages) == []


async def test_a_read_retried_on_a_new_leader_returns_the_same_messages(tmp_path: Path) -> None:
    async with three_nodes(tmp_path) as (nodes, leader):
        async with channel_to(leader) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            bob = await signup(stub, "bob")
            ids = await inbox(stub, "bob", bob, 3)
            read = pb.ReadMessagesRequest(limit=2, request_id="r")
            first = await stub.ReadMessages(read, metadata=bob)
        moved = await new_leader(nodes, leader)
        async with channel_to(moved) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            assert await stub.ReadMessages(read, metadata=bob) == first
            assert [m.id for m in first.messages] == ids[:2]
            rest = await stub.ReadMessages(pb.ReadMessagesRequest(), metadata=bob)
            assert [m.id for m in rest.messages] == ids[2:]


async def test_a_replay_flood_is_refused_beyond_the_accounts_share_and_others_go_on(
    tmp_path: Path,
) -> None:
    """One account replaying a large read from many tasks: its excess is refused in one
    line, at once, while another account's sends all go through."""
    config = NodeConfig(
        node_id=1,
        cluster={1: f"127.0.0.1:{free_port()}"},
        data_dir=tmp_path / "n1",
        ops_per_s=200.0,
    )
    node = ChatNode(config)
    await node.start()
    try:
        await wait_until_serving(node)
        async with grpc.aio.insecure_channel(config.address) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            mallory, alice = await signup(stub, "mallory"), await signup(stub, "alice")
            for i in range(50):
                await stub.SendMessage(
                    pb.SendMessageRequest(recipient="mallory", body=f"m{i}"), metadata=mallory
                )
            replay = pb.ReadMessagesRequest(limit=1000, request_id="R")
            first = await stub.ReadMessages(replay, metadata=mallory)
            assert len(first.messages) == 50

            async def replay_once() -> grpc.StatusCode:
                try:
                    assert await stub.ReadMessages(replay, metadata=mallory) == first
                except grpc.aio.AioRpcError as exc:
                    assert "\n" not in (exc.details() or "")
                    return exc.code()
                return grpc.StatusCode.OK

            started = time.monotonic()
            flood = await asyncio.gather(*(replay_once() for _ in range(600)))
            elapsed = time.monotonic() - started
            sends = [
                stub.SendMessage(
                    pb.SendMessageRequest(recipient="alice", body="hi"), metadata=alice
                )
                for _ in range(20)
            ]
            assert len(await asyncio.gather(*sends)) == 20
        codes = collections.Counter(flood)
        assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
        # At most one burst of its share and the refill meanwhile.
        assert codes[grpc.StatusCode.OK] <= 200 + 200 * elapsed + 1, (codes, elapsed)
    finally:
        await node.stop()
