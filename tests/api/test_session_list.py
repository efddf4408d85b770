"""ListSessions and EndSession over the real server: a user's own devices, labelled at
Login, one of them ended (its token refused, its streams ended), exactly once across a
failover, and nothing told about anyone else's sessions."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import grpc
import pytest

from chatnode.server import ChatNode
from client.library import AuthError, ChatClient, InvalidArgument, NotFound
from proto import chat_pb2 as pb
from proto import chat_pb2_grpc
from tests.api.test_exactly_once import channel_to, new_leader, three_nodes
from tests.support.nodes import PASSWORD, signup

CODE = grpc.StatusCode
Stub = chat_pb2_grpc.ChatServiceStub
Auth = tuple[tuple[str, str], ...]
WAIT_S = 10.0


async def login(stub: Stub, name: str, label: str = "", request_id: str = "") -> Auth:
    request = pb.LoginRequest(
        username=name, password=PASSWORD, client_label=label, request_id=request_id
    )
    reply = await stub.Login(request)
    return (("authorization", f"Bearer {reply.session_token}"),)


async def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code()


async def sessions(stub: Stub, auth: Auth) -> list[pb.SessionInfo]:
    return list((await stub.ListSessions(pb.ListSessionsRequest(), metadata=auth)).sessions)


async def test_two_devices_are_listed_and_ending_the_other_refuses_its_token_and_ends_its_streams(
    node: ChatNode,
) -> None:
    laptop = ChatClient([node.config.address])
    phone = ChatClient([node.config.address])
    try:
        await laptop.create_account("alice", PASSWORD)
        await laptop.login("alice", PASSWORD, client_label="laptop")
        await phone.login("alice", PASSWORD, client_label="phone")
        listed = await laptop.list_sessions()
        assert [(s.client_label, s.current) for s in listed] == [
            ("phone", False),
            ("laptop", True),
        ]
        assert all(s.created_ms > 0 and s.last_used_ms >= s.created_ms for s in listed)
        assert all(len(s.session_id) == 32 for s in listed)
        phone_view = await phone.list_sessions()
        assert [(s.session_id, s.current) for s in phone_view] == [
            (listed[0].session_id, True),
            (listed[1].session_id, False),
        ]

        live = phone.subscribe()
        first = asyncio.ensure_future(anext(live))
        await laptop.send_message("alice", "to every device")
        async with asyncio.timeout(WAIT_S):
            assert (await first).body == "to every device"
        ended = asyncio.ensure_future(anext(live))
        await laptop.end_session(listed[0].session_id)
        async with asyncio.timeout(WAIT_S):
            with pytest.raises(AuthError):
                await ended  # the phone's live stream ended
        with pytest.raises(AuthError):
            await phone.list_sessions()
        remaining = await laptop.list_sessions()
        assert [(s.client_label, s.current) for s in remaining] == [("laptop", True)]
        with pytest.raises(NotFound):  # already ended: nothing to end
            await laptop.end_session(listed[0].session_id)
    finally:
        await laptop.close()
        await phone.close()


async def test_last_used_moves_with_use_and_the_token_is_not_the_id(node: ChatNode) -> None:
    async with grpc.aio.insecure_channel(node.config.address) as channel:
        stub = Stub(channel)
        alice = await signup(stub, "alice")
        (before,) = await sessions(stub, alice)
        await asyncio.sleep(0.01)  # the cluster clock moves with the wall clock
        await stub.SendMessage(pb.SendMessageRequest(recipient="alice", body="x"), metadata=alice)
        (after,) = await sessions(stub, alice)
        assert after.last_used_unix_ms > before.last_used_unix_ms
        assert after.created_unix_ms == before.created_unix_ms
        token = alice[0][1].removeprefix("Bearer ")
        assert after.session_id not in token


async def test_hostile_session_calls_reveal_nothing_of_other_users(node: ChatNode) -> None:
    async with grpc.aio.insecure_channel(node.config.address) as channel:
        stub = Stub(channel)
        alice = await signup(stub, "alice")
        bob = await signup(stub, "bob")
        (bobs,) = await sessions(stub, bob)
        assert [s.session_id for s in await sessions(stub, alice)] != [bobs.session_id]
        end = stub.EndSession
        for session_id in (bobs.session_id, secrets.token_hex(16)):
            request = pb.EndSessionRequest(session_id=session_id)
            assert await code_of(end(request, metadata=alice)) == CODE.NOT_FOUND
        for bad in ("", "xyz", bobs.session_id.upper(), bobs.session_id + "0", "%" * 32):
            request = pb.EndSessionRequest(session_id=bad)
            assert await code_of(end(request, metadata=alice)) == CODE.INVALID_ARGUMENT
        assert await code_of(end(pb.EndSessionRequest(session_id=bobs.session_id))) == (
            CODE.UNAUTHENTICATED
        )
        assert await code_of(stub.ListSessions(pb.ListSessionsRequest())) == CODE.UNAUTHENTICATED
        assert len(await sessions(stub, bob)) == 1  # bob's session survived all of it
        for label in ("x" * 65, "two\nlines", "bell\a"):
            assert await code_of(login(stub, "alice", label)) == CODE.INVALID_ARGUMENT
        assert len(await sessions(stub, alice)) == 1
    async with ChatClient([node.config.address]) as client:
        await client.login("alice", PASSWORD, client_label="ünïcode ok")
        with pytest.raises(InvalidArgument):
            await client.end_session("not an id")
        with pytest.raises(NotFound):
            await client.end_session(bobs.session_id)
        labels = [s.client_label for s in await client.list_sessions()]
        assert labels == ["ünïcode ok", ""]


async def test_end_session_retried_on_a_new_leader_changes_nothing(tmp_path: Path) -> None:
    async with three_nodes(tmp_path) as (nodes, leader):
        async with channel_to(leader) as channel:
            stub = Stub(channel)
            await stub.CreateAccount(pb.CreateAccountRequest(username="alice", password=PASSWORD))
            laptop = await login(stub, "alice", "laptop")
            phone = await login(stub, "alice", "phone")
            tablet = await login(stub, "alice", "tablet")
            by_label = {s.client_label: s.session_id for s in await sessions(stub, laptop)}
            end_phone = pb.EndSessionRequest(session_id=by_label["phone"], request_id="e1")
            end_self = pb.EndSessionRequest(session_id=by_label["tablet"], request_id="e2")
            first = await stub.EndSession(end_phone, metadata=laptop)
            await stub.EndSession(end_self, metadata=tablet)
        moved = await new_leader(nodes, leader)
        async with channel_to(moved) as channel:
            stub = Stub(channel)
            assert await stub.EndSession(end_phone, metadata=laptop) == first
            # the tablet's retry is answered although it ended its own session
            assert await stub.EndSession(end_self, metadata=tablet) == pb.EndSessionResponse()
            listed = await sessions(stub, laptop)
            assert [s.client_label for s in listed] == ["laptop"]
            again = pb.EndSessionRequest(session_id=by_label["phone"], request_id="e3")
            assert await code_of(stub.EndSession(again, metadata=laptop)) == CODE.NOT_FOUND
            for ended in (phone, tablet):
                assert await code_of(sessions(stub, ended)) == CODE.UNAUTHENTICATED
