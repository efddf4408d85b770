"""Every ChatService method over a real gRPC channel: success paths, errors, codes."""

from __future__ import annotations

import asyncio
import dataclasses

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from chatnode.server import ChatNode, ConfigError
from proto import chat_pb2 as pb
from proto import chat_pb2_grpc
from tests.support.nodes import PASSWORD, signup

Stub = chat_pb2_grpc.ChatServiceStub
CODE = grpc.StatusCode


async def expect_error(call, code: grpc.StatusCode) -> str:
    """Await call, assert it fails with code and a one-line message; return the message."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    details = caught.value.details()
    assert details and "\n" not in details and "Traceback" not in details
    return details


# -- accounts ---------------------------------------------------------------------


async def test_create_login_logout(stub: Stub) -> None:
    await stub.CreateAccount(pb.CreateAccountRequest(username="alice", password=PASSWORD))
    reply = await stub.Login(pb.LoginRequest(username="alice", password=PASSWORD))
    assert reply.session_token and reply.unread_count == 0 and reply.last_message_id == 0
    auth = (("authorization", f"Bearer {reply.session_token}"),)
    await stub.Logout(pb.LogoutRequest(), metadata=auth)
    await expect_error(
        stub.ListAccounts(pb.ListAccountsRequest(), metadata=auth), CODE.UNAUTHENTICATED
    )


async def test_duplicate_username_is_already_exists(stub: Stub) -> None:
    await signup(stub, "bob")
    call = stub.CreateAccount(pb.CreateAccountRequest(username="bob", password=PASSWORD))
    await expect_error(call, CODE.ALREADY_EXISTS)


async def test_wrong_password_and_unknown_user_look_the_same(stub: Stub) -> None:
    await signup(stub, "carol")
    wrong = await expect_error(
        stub.Login(pb.LoginRequest(username="carol", password="not the one")), CODE.UNAUTHENTICATED
    )
    unknown = await expect_error(
        stub.Login(pb.LoginRequest(username="nobody", password=PASSWORD)), CODE.UNAUTHENTICATED
    )
    assert wrong == unknown


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("", PASSWORD),
        ("x" * 33, PASSWORD),
        ("has space", PASSWORD),
        ("semi;colon", PASSWORD),
        ("émile", PASSWORD),
        ("star*", PASSWORD),
        ("ok_name", "short"),
        ("ok_name", "p" * 1025),
        ("ok_name", "é" * 513),  # 1026 bytes in UTF-8
    ],
)
async def test_create_account_validation(stub: Stub, username: str, password: str) -> None:
    call = stub.CreateAccount(pb.CreateAccountRequest(username=username, password=password))
    await expect_error(call, CODE.INVALID_ARGUMENT)


@pytest.mark.parametrize(
    ("username", "password"), [("a", "p" * 8), ("A.b-c_9" + "x" * 25, "p" * 1024)]
)
async def test_create_account_limits_accepted(stub: Stub, username: str, password: str) -> None:
    await stub.CreateAccount(pb.CreateAccountRequest(username=username, password=password))
    await stub.Login(pb.LoginRequest(username=username, password=password))


async def test_missing_or_bad_token(stub: Stub) -> None:
    request = pb.ListAccountsRequest()
    await expect_error(stub.ListAccounts(request), CODE.UNAUTHENTICATED)
    bad = (("authorization", "Bearer not-a-token"),)
    await expect_error(stub.ListAccounts(request, metadata=bad), CODE.UNAUTHENTICATED)
    basic = (("authorization", "Basic abc"),)
    await expect_error(stub.ListAccounts(request, metadata=basic), CODE.UNAUTHENTICATED)


async def test_every_authenticated_method_requires_a_session(stub: Stub) -> None:
    calls = [
        stub.Logout(pb.LogoutRequest()),
        stub.ListAccounts(pb.ListAccountsRequest()),
        stub.SendMessage(pb.SendMessageRequest(recipient="a", body="b")),
        stub.ReadMessages(pb.ReadMessagesRequest()),
        stub.MarkRead(pb.MarkReadRequest(message_ids=[1])),
        stub.DeleteMessages(pb.DeleteMessagesRequest(message_ids=[1])),
        stub.DeleteAccount(pb.DeleteAccountRequest(password=PASSWORD)),
    ]
    for call in calls:
        await expect_error(call, CODE.UNAUTHENTICATED)
    stream = stub.Subscribe(pb.SubscribeRequest())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.read()
    assert caught.value.code() == CODE.UNAUTHENTICATED


async def test_sessions_are_independent(stub: Stub) -> None:
    first = await signup(stub, "dave")
    second = await stub.Login(pb.LoginRequest(username="dave", password=PASSWORD))
    assert ("authorization", f"Bearer {second.session_token}") != first[0]
    await stub.Logout(pb.LogoutRequest(), metadata=first)
    other = (("authorization", f"Bearer {second.session_token}"),)
    await stub.ListAccounts(pb.ListAccountsRequest(), metadata=other)


# -- listing ----------------------------------------------------------------------


async def test_list_accounts_wildcards_sorted_and_case_sensitive(stub: Stub) -> None:
    auth = await signup(stub, "zed")
    for name in ("alpha", "Alpha", "alps", "beta", "a1", "a2", "ab"):
        await stub.CreateAccount(pb.CreateAccountRequest(username=name, password=PASSWORD))

    async def names(pattern: str) -> list[str]:
        reply = await stub.ListAccounts(pb.ListAccountsRequest(pattern=pattern), metadata=auth)
        return list(reply.usernames)

    assert await names("") == sorted(["zed", "alpha", "Alpha", "alps", "beta", "a1", "a2", "ab"])
    assert await names("al*") == ["alpha", "alps"]
    assert await names("A*") == ["Alpha"]
    assert await names("a?") == ["a1", "a2", "ab"]
    assert await names("a[12]") == ["a1", "a2"]
    assert await names("nomatch*") == []


async def test_list_accounts_paging(stub: Stub) -> None:
    auth = await signup(stub, "pager")
    created = [f"user{i:02d}" for i in range(25)]
    await asyncio.gather(
        *(
            stub.CreateAccount(pb.CreateAccountRequest(username=n, password=PASSWORD))
            for n in created
        )
    )
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        request = pb.ListAccountsRequest(pattern="user*", page_size=10, page_token=token)
        reply = await stub.ListAccounts(request, metadata=auth)
        seen += reply.usernames
        pages += 1
        token = reply.next_page_token
        if not token:
            break
    assert seen == created and pages == 3
    bad = pb.ListAccountsRequest(page_token="!!not-ours!!")
    await expect_error(stub.ListAccounts(bad, metadata=auth), CODE.INVALID_ARGUMENT)


async def test_list_accounts_page_size_is_clamped(stub: Stub) -> None:
    auth = await signup(stub, "clamp")
    reply = await stub.ListAccounts(pb.ListAccountsRequest(page_size=5000), metadata=auth)
    assert list(reply.usernames) == ["clamp"] and reply.next_page_token == ""


# -- messages ---------------------------------------------------------------------


async def test_send_and_read_unread_oldest_first(stub: Stub) -> None:
    alice = await signup(stub, "alice")
    bob = await signup(stub, "bob")
    ids = []
    for i in range(3):
        reply = await stub.SendMessage(
            pb.SendMessageRequest(recipient="bob", body=f"hi {i}"), metadata=alice
        )
        assert reply.recipient_online is False
        ids.append(reply.message_id)
    assert ids == sorted(ids) and len(set(ids)) == 3
    login = await stub.Login(pb.LoginRequest(username="bob", password=PASSWORD))
    assert login.unread_count == 3 and login.last_message_id == ids[-1]
    first = await stub.ReadMessages(pb.ReadMessagesRequest(limit=2), metadata=bob)
    assert [m.body for m in first.messages] == ["hi 0", "hi 1"]
    assert all(m.sender == "alice" and m.recipient == "bob" and m.read for m in first.messages)
    assert first.remaining_unread == 1
    rest = await stub.ReadMessages(pb.ReadMessagesRequest(), metadata=bob)
    assert [m.id for m in rest.messages] == ids[2:] and rest.remaining_unread == 0
    assert rest.messages[0].sent_at_unix_ms > 1_600_000_000_000


async def test_send_errors(stub: Stub) -> None:
    alice = await signup(stub, "alice")
    call = stub.SendMessage(pb.SendMessageRequest(recipient="ghost", body="x"), metadata=alice)
    await expect_error(call, CODE.NOT_FOUND)
    for body in ("", "x" * 65_537, "é" * 32_769):
        call = stub.SendMessage(pb.SendMessageRequest(recipient="alice", body=body), metadata=alice)
        await expect_error(call, CODE.INVALID_ARGUMENT)
    call = stub.SendMessage(pb.SendMessageRequest(recipient="bad name", body="x"), metadata=alice)
    await expect_error(call, CODE.INVALID_ARGUMENT)
    ok = pb.SendMessageRequest(recipient="alice", body="x" * 65_536)
    assert (await stub.SendMessage(ok, metadata=alice)).message_id > 0


async def test_mark_read_and_delete_only_touch_own_messages(stub: Stub) -> None:
    alice = await signup(stub, "alice")
    bob = await signup(stub, "bob")
    eve = await signup(stub, "eve")
    to_bob = (
        await stub.SendMessage(pb.SendMessageRequest(recipient="bob", body="1"), metadata=alice)
    ).message_id
    to_alice = (
        await stub.SendMessage(pb.SendMessageRequest(recipient="alice", body="2"), metadata=bob)
    ).message_id
    marked = await stub.MarkRead(pb.MarkReadRequest(message_ids=[to_bob, to_alice]), metadata=eve)
    assert marked.marked_count == 0
    marked = await stub.MarkRead(
        pb.MarkReadRequest(message_ids=[to_bob, to_alice, 999]), metadata=bob
    )
    assert marked.marked_count == 1
    again = await stub.MarkRead(pb.MarkReadRequest(message_ids=[to_bob]), metadata=bob)
    assert again.marked_count == 0
    deleted = await stub.DeleteMessages(
        pb.DeleteMessagesRequest(message_ids=[to_bob]), metadata=eve
    )
    assert deleted.deleted_count == 0
    # The sender may delete what it sent; the recipient what it received.
    deleted = await stub.DeleteMessages(
        pb.DeleteMessagesRequest(message_ids=[to_bob, to_alice]), metadata=alice
    )
    assert deleted.deleted_count == 2
    unread = await stub.ReadMessages(pb.ReadMessagesRequest(), metadata=alice)
    assert list(unread.messages) == []


async def test_read_limit_is_clamped(stub: Stub) -> None:
    alice = await signup(stub, "alice")
    await stub.SendMessage(pb.SendMessageRequest(recipient="alice", body="x"), metadata=alice)
    reply = await stub.ReadMessages(pb.ReadMessagesRequest(limit=100_000), metadata=alice)
    assert len(reply.messages) == 1


# -- exactly once -----------------------------------------------------------------


async def test_retried_send_returns_first_result_and_stores_once(stub: Stub) -> None:
    alice = await signup(stub, "alice")
    await signup(stub, "bob")
    request = pb.SendMessageRequest(recipient="bob", body="once", request_id="r-1")
    first, second = [await stub.SendMessage(request, metadata=alice) for _ in range(2)]
    assert first == second
    concurrent = await asyncio.gather(
        *(stub.SendMessage(request, metadata=alice) for _ in range(5))
    )
    assert {r.message_id for r in concurrent} == {first.message_id}
    login = await stub.Login(pb.LoginRequest(username="bob", password=PASSWORD))
    assert login.unread_count == 1


async def test_request_ids_are_per_user(stub: Stub) -> None:
    alice = await signup(stub, "alice")
    carol = await signup(stub, "carol")
    await signup(stub, "bob")
    request = pb.SendMessageRequest(recipient="bob", body="x", request_id="same")
    a = await stub.SendMessage(request, metadata=alice)
    c = await stub.SendMessage(request, metadata=carol)
    assert a.message_id != c.message_id


async def test_retried_create_and_login(stub: Stub) -> None:
    create = pb.CreateAccountRequest(username="retry", password=PASSWORD, request_id="c-1")
    await stub.CreateAccount(create)
    await stub.CreateAccount(create)  # same id: the first result, not ALREADY_EXISTS
    fresh = pb.CreateAccountRequest(username="retry", password=PASSWORD, request_id="c-2")
    await expect_error(stub.CreateAccount(fresh), CODE.ALREADY_EXISTS)
    login = pb.LoginRequest(username="retry", password=PASSWORD, request_id="l-1")
    first = await stub.Login(login)
    second = await stub.Login(login)
    assert first.session_token == second.session_token
    wrong = pb.LoginRequest(username="retry", password="wrong password", request_id="l-1")
    await expect_error(stub.Login(wrong), CODE.UNAUTHENTICATED)


# -- delete account ---------------------------------------------------------------


async def test_delete_account_semantics(stub: Stub) -> None:
    alice = await signup(stub, "alice")
    bob = await signup(stub, "bob")
    await stub.SendMessage(
        pb.SendMessageRequest(recipient="bob", body="from alice"), metadata=alice
    )
    await stub.SendMessage(pb.SendMessageRequest(recipient="alice", body="from bob"), metadata=bob)
    wrong = pb.DeleteAccountRequest(password="wrong password")
    await expect_error(stub.DeleteAccount(wrong, metadata=alice), CODE.UNAUTHENTICATED)
    await stub.DeleteAccount(pb.DeleteAccountRequest(password=PASSWORD), metadata=alice)
    # Its sessions are gone; its name is free; what it sent stays with bob.
    await expect_error(
        stub.ListAccounts(pb.ListAccountsRequest(), metadata=alice), CODE.UNAUTHENTICATED
    )
    listed = await stub.ListAccounts(pb.ListAccountsRequest(), metadata=bob)
    assert list(listed.usernames) == ["bob"]
    kept = await stub.ReadMessages(pb.ReadMessagesRequest(), metadata=bob)
    assert [(m.sender, m.body) for m in kept.messages] == [("alice", "from alice")]
    send = stub.SendMessage(pb.SendMessageRequest(recipient="alice", body="x"), metadata=bob)
    await expect_error(send, CODE.NOT_FOUND)
    # Re-registered: a new account with no old messages.
    await signup(stub, "alice")
    login = await stub.Login(pb.LoginRequest(username="alice", password=PASSWORD))
    assert login.unread_count == 0 and login.last_message_id == 0


# -- subscribe --------------------------------------------------------------------


async def next_event(stream) -> pb.SubscribeEvent:
    return await asyncio.wait_for(stream.read(), timeout=5)


async def test_subscribe_replays_then_streams_live(stub: Stub, node: ChatNode) -> None:
    alice = await signup(stub, "alice")
    bob = await signup(stub, "bob")
    old = [
        (
            await stub.SendMessage(
                pb.SendMessageRequest(recipient="bob", body=f"old {i}"), metadata=alice
            )
        ).message_id
        for i in range(3)
    ]
    stream = stub.Subscribe(pb.SubscribeRequest(after_id=old[0]), metadata=bob)
    leader = await next_event(stream)
    assert leader.WhichOneof("event") == "leader"
    assert leader.leader.leader_id == 1 and leader.leader.leader_address == node.config.address
    replayed = [(await next_event(stream)).message.id for _ in range(2)]
    assert replayed == old[1:]
    live = await stub.SendMessage(
        pb.SendMessageRequest(recipient="bob", body="live"), metadata=alice
    )
    assert live.recipient_online is True
    event = await next_event(stream)
    assert event.message.id == live.message_id and event.message.body == "live"
    stream.cancel()


async def test_subscribe_after_last_message_id_is_live_only(stub: Stub) -> None:
    alice = await signup(stub, "alice")
    await signup(stub, "bob")
    await stub.SendMessage(pb.SendMessageRequest(recipient="bob", body="old"), metadata=alice)
    login = await stub.Login(pb.LoginRequest(username="bob", password=PASSWORD))
    bob = (("authorization", f"Bearer {login.session_token}"),)
    stream = stub.Subscribe(pb.SubscribeRequest(after_id=login.last_message_id), metadata=bob)
    await next_event(stream)
    new = await stub.SendMessage(pb.SendMessageRequest(recipient="bob", body="new"), metadata=alice)
    assert (await next_event(stream)).message.id == new.message_id
    stream.cancel()


async def test_subscribe_many_messages_in_order_without_duplicates(stub: Stub) -> None:
    alice = await signup(stub, "alice")
    bob = await signup(stub, "bob")
    before = [
        stub.SendMessage(pb.SendMessageRequest(recipient="bob", body=f"b{i}"), metadata=alice)
        for i in range(300)
    ]
    sent = [r.message_id for r in await asyncio.gather(*before)]
    stream = stub.Subscribe(pb.SubscribeRequest(), metadata=bob)
    await next_event(stream)
    during = [
        stub.SendMessage(pb.SendMessageRequest(recipient="bob", body=f"d{i}"), metadata=alice)
        for i in range(100)
    ]
    sent += [r.message_id for r in await asyncio.gather(*during)]
    got = [(await next_event(stream)).message.id for _ in range(len(sent))]
    assert got == sorted(sent)
    stream.cancel()


async def test_logout_and_delete_end_open_streams(stub: Stub) -> None:
    bob = await signup(stub, "bob")
    stream = stub.Subscribe(pb.SubscribeRequest(), metadata=bob)
    await next_event(stream)
    await stub.DeleteAccount(pb.DeleteAccountRequest(password=PASSWORD), metadata=bob)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await next_event(stream)
    assert caught.value.code() == CODE.UNAUTHENTICATED


# -- cluster status, health, reflection, limits -------------------------------------


async def test_cluster_status(stub: Stub, node: ChatNode) -> None:
    status = await stub.GetClusterStatus(pb.GetClusterStatusRequest())
    assert status.node_id == 1 and status.role == "leader" and status.leader_id == 1
    assert status.leader_address == node.config.address and status.term >= 1
    assert status.min_insync == 1 and status.config_epoch >= 1
    assert [(m.id, m.role, m.in_sync, m.reachable) for m in status.members] == [
        (1, "leader", True, True)
    ]


async def test_health_and_reflection(node: ChatNode) -> None:
    async with grpc.aio.insecure_channel(node.config.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "chat.v1.ChatService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = [r async for r in reflect.ServerReflectionInfo(iter([request]))]
        names = {s.name for s in replies[0].list_services_response.service}
        assert {"chat.v1.ChatService", "grpc.health.v1.Health"} <= names


async def test_oversized_request_is_refused_and_node_survives(stub: Stub) -> None:
    alice = await signup(stub, "alice")
    huge = pb.SendMessageRequest(recipient="alice", body="x" * (5 * 1024 * 1024))
    await expect_error(stub.SendMessage(huge, metadata=alice), CODE.RESOURCE_EXHAUSTED)
    ok = await stub.SendMessage(
        pb.SendMessageRequest(recipient="alice", body="fine"), metadata=alice
    )
    assert ok.message_id > 0


async def test_malformed_bytes_are_invalid_argument(node: ChatNode) -> None:
    async with grpc.aio.insecure_channel(node.config.address) as channel:
        raw = channel.unary_unary("/chat.v1.ChatService/CreateAccount")
        # Field 1 (username) as a length-delimited string holding invalid UTF-8.
        await expect_error(raw(b"\x0a\x02\xff\xfe"), CODE.INVALID_ARGUMENT)
        await expect_error(raw(b"\xff\xff\xff"), CODE.INVALID_ARGUMENT)
    async with grpc.aio.insecure_channel(node.config.address) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        assert (await stub.GetClusterStatus(pb.GetClusterStatusRequest())).role == "leader"


async def test_one_request_id_for_two_kinds_of_call_names_two_requests(stub: Stub) -> None:
    """Replies are keyed by user, request_id and kind of call (docs/api.md, "Exactly once":
    "for the same kind of call"): the same id on another kind is a request of its own."""
    create = pb.CreateAccountRequest(username="reuse", password=PASSWORD, request_id="same")
    await stub.CreateAccount(create)
    login = await stub.Login(
        pb.LoginRequest(username="reuse", password=PASSWORD, request_id="same")
    )
    auth = (("authorization", f"Bearer {login.session_token}"),)
    sent = await stub.SendMessage(
        pb.SendMessageRequest(recipient="reuse", body="x", request_id="same"), metadata=auth
    )
    read = await stub.ReadMessages(pb.ReadMessagesRequest(request_id="same"), metadata=auth)
    assert [m.id for m in read.messages] == [sent.message_id]
    deleted = await stub.DeleteMessages(
        pb.DeleteMessagesRequest(message_ids=[sent.message_id], request_id="same"), metadata=auth
    )
    assert deleted.deleted_count == 1


async def test_a_second_node_on_the_same_address_refuses_to_start(node: ChatNode, tmp_path) -> None:
    """grpc binds with SO_REUSEPORT unless told not to: a stale process on a node's port
    would then take half of its connections without a word."""
    twin = ChatNode(dataclasses.replace(node.config, data_dir=tmp_path / "twin"))
    with pytest.raises(ConfigError, match="cannot listen"):
        await twin.start()  # the process exits on this (chatnode.main: exit 1, one line)
