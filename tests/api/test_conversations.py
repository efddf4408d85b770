"""History over the real server: one conversation, both directions, read or unread, newest
first, paged by id, on the Session stream (the library's default) and unary."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from chatnode.server import ChatNode
from client.library import ChatClient, InvalidArgument, Message
from proto import chat_pb2 as pb
from proto import chat_pb2_grpc
from tests.support.nodes import PASSWORD, signup

CONVERSATION = 2_000
PIPELINE = 64  # calls in flight on one stream at most
PAGE = 100
PAGING_LIMIT_S = 20.0


async def logged_in(address: str, name: str, *, create: bool, unary: bool = False) -> ChatClient:
    client = ChatClient([address], unary=unary)
    if create:
        await client.create_account(name, PASSWORD)
    await client.login(name, PASSWORD)
    return client


async def send_all(client: ChatClient, recipient: str, bodies: list[str]) -> list[int]:
    """Send bodies in order, PIPELINE at a time on the client's stream; their ids."""
    ids: list[int] = []
    for start in range(0, len(bodies), PIPELINE):
        chunk = bodies[start : start + PIPELINE]
        sent = await asyncio.gather(*(client.send_message(recipient, body) for body in chunk))
        ids.extend(s.message_id for s in sent)
    return ids


async def whole_history(client: ChatClient, partner: str, limit: int) -> list[Message]:
    messages: list[Message] = []
    before = 0
    while True:
        page = await client.history(partner, before_id=before, limit=limit)
        messages.extend(page.messages)
        assert len(page.messages) <= limit
        if not page.next_before_id:
            return messages
        assert page.next_before_id == page.messages[-1].id
        assert not before or page.next_before_id < before, "paging must move back"
        before = page.next_before_id


async def test_a_2000_message_conversation_pages_back_to_its_first_message_from_a_second_device(
    node: ChatNode,
) -> None:
    address = node.config.address
    alice = await logged_in(address, "alice", create=True)
    bob = await logged_in(address, "bob", create=True)
    carol = await logged_in(address, "carol", create=True)
    try:
        half = CONVERSATION // 2
        from_alice, from_bob = await asyncio.gather(
            send_all(alice, "bob", [f"a{i}" for i in range(half)]),
            send_all(bob, "alice", [f"b{i}" for i in range(half)]),
        )
        await send_all(carol, "alice", ["not this conversation"] * 5)
        await send_all(alice, "carol", ["nor this"] * 5)
        phone = await logged_in(address, "alice", create=False, unary=True)
        try:
            started = time.monotonic()
            streamed = await whole_history(alice, "bob", PAGE)
            unary = await whole_history(phone, "bob", PAGE)
            elapsed = time.monotonic() - started
        finally:
            await phone.close()
        assert streamed == unary
        ids = [m.id for m in streamed]
        assert ids == sorted(from_alice + from_bob, reverse=True)  # newest first, nothing else
        assert {(m.sender, m.recipient) for m in streamed} == {("alice", "bob"), ("bob", "alice")}
        assert streamed[-1].body in {"a0", "b0"}  # back to the first message
        assert not any(m.read for m in streamed if m.recipient == "alice")
        assert elapsed < PAGING_LIMIT_S, f"paging {CONVERSATION} messages took {elapsed:.1f}s"
        # History marks nothing read: bob's messages are all still unread for alice.
        unread = await alice.read_messages(limit=1)
        assert unread.remaining == half + 5 - 1
        capped = await alice.history("bob", limit=2**32 - 1)  # over the maximum: clamped
        assert [m.id for m in capped.messages] == ids[:1000]
        assert capped.next_before_id == ids[999]
        # The other side sees the same conversation.
        assert [m.id for m in await whole_history(bob, "alice", 1000)] == ids
    finally:
        for client in (alice, bob, carol):
            await client.close()


async def test_history_shows_read_flags_and_a_message_just_sent_on_the_same_stream(
    node: ChatNode,
) -> None:
    address = node.config.address
    alice = await logged_in(address, "alice", create=True)
    bob = await logged_in(address, "bob", create=True)
    try:
        first = await bob.send_message("alice", "hello")
        await alice.read_messages()
        sent, page = await asyncio.gather(
            alice.send_message("bob", "hi back"), alice.history("bob", limit=10)
        )
        assert [m.id for m in page.messages] == [sent.message_id, first.message_id]
        assert [m.read for m in page.messages] == [False, True]
        assert page.next_before_id == 0
        older = await alice.history("bob", before_id=sent.message_id)
        assert [m.id for m in older.messages] == [first.message_id]
        assert (await alice.history("nobody")).messages == ()
    finally:
        await alice.close()
        await bob.close()


async def test_hostile_history_requests_are_refused_or_clamped(node: ChatNode) -> None:
    async with grpc.aio.insecure_channel(node.config.address) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        alice = await signup(stub, "alice")
        await signup(stub, "bob")
        for _ in range(3):
            await stub.SendMessage(pb.SendMessageRequest(recipient="bob", body="x"), metadata=alice)
        huge = await stub.History(
            pb.HistoryRequest(partner="bob", limit=2**32 - 1, before_id=2**63 - 1), metadata=alice
        )
        assert len(huge.messages) == 3 and huge.next_before_id == 0
        for bad in (
            pb.HistoryRequest(partner=""),
            pb.HistoryRequest(partner="bob; drop"),
            pb.HistoryRequest(partner="x" * 33),
            pb.HistoryRequest(partner="bob", before_id=2**64 - 1),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.History(bad, metadata=alice)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await stub.History(pb.HistoryRequest(partner="bob"))
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
    async with ChatClient([node.config.address]) as client:
        await client.login("alice", PASSWORD)
        with pytest.raises(InvalidArgument):  # a CallError on the stream, which stays open
            await client.history("-bad name-")
        assert len((await client.history("bob")).messages) == 3
