"""Open Subscribe streams: the per-user cap, and queues that stay bounded for slow streams."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest

from chatnode import live
from chatnode.live import Closed, LiveHub, Overflowed, Subscriber
from chatnode.server import ChatNode
from chatnode.state import StoredMessage
from coord.boundary import LeaderView
from proto import chat_pb2 as pb
from proto import chat_pb2_grpc
from proto.errors import ResourceExhausted
from tests.support.nodes import signup

Stub = chat_pb2_grpc.ChatServiceStub
CODE = grpc.StatusCode
ALICE, BOB, BOB_AGAIN = 1, 2, 3  # account ids; BOB_AGAIN took the name after BOB's deletion


def message(id_: int, body: str = "hi") -> StoredMessage:
    return StoredMessage(id_, "alice", "bob", body, 0, False)


async def drain(subscriber: Subscriber) -> list[object]:
    events = []
    while subscriber.queued:
        events.append(await subscriber.get())
    return events


async def test_a_stream_that_is_not_read_keeps_at_most_the_limit_of_messages() -> None:
    subscriber = Subscriber(BOB, "bob", "t")
    for i in range(1, 10 * live.QUEUE_LIMIT):
        subscriber.offer(message(i))
    assert subscriber.queued == live.QUEUE_LIMIT + 1  # the messages, then one marker
    events = await drain(subscriber)
    assert [e.id for e in events[:-1]] == list(range(1, live.QUEUE_LIMIT + 1))
    assert events[-1] == Overflowed()


async def test_a_stream_keeps_at_most_the_byte_limit_of_message_bodies() -> None:
    subscriber = Subscriber(BOB, "bob", "t")
    big = "x" * 65_536
    for i in range(1, 200):
        subscriber.offer(message(i, big))
        assert subscriber.queued_bytes <= live.QUEUE_BYTES
    fits = live.QUEUE_BYTES // len(big)
    assert subscriber.queued == fits + 1
    events = await drain(subscriber)
    assert events[-1] == Overflowed() and subscriber.queued_bytes == 0


async def test_after_the_marker_is_taken_live_messages_queue_again() -> None:
    subscriber = Subscriber(BOB, "bob", "t")
    for i in range(1, live.QUEUE_LIMIT + 5):
        subscriber.offer(message(i))
    await drain(subscriber)
    subscriber.offer(message(5000))
    assert await subscriber.get() == message(5000)


async def test_leader_changes_do_not_pile_up_and_nothing_follows_a_close() -> None:
    subscriber = Subscriber(BOB, "bob", "t")
    subscriber.offer(message(1))
    for term in range(1, 10_000):
        subscriber.offer(LeaderView(1 + term % 3, f"host:{term}", term))
    subscriber.offer(None)
    subscriber.offer(message(2))
    subscriber.offer(LeaderView(2, "host:2", 10_001))
    subscriber.offer(Closed("session ended"))
    for i in range(3, 10_000):
        subscriber.offer(message(i))
        subscriber.offer(Closed("again"))
    events = await drain(subscriber)
    assert events == [
        message(1),
        None,  # only the newest of the changes the handler had not yet seen
        message(2),
        LeaderView(2, "host:2", 10_001),
        Closed("session ended"),
    ]


async def test_get_waits_for_an_event() -> None:
    subscriber = Subscriber(BOB, "bob", "t")
    waiting = asyncio.ensure_future(subscriber.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    subscriber.offer(message(7))
    async with asyncio.timeout(5):
        assert await waiting == message(7)


def test_the_hub_caps_streams_per_user() -> None:
    hub = LiveHub()
    limit = live.STREAMS_PER_USER["Subscribe"]
    streams = [hub.subscribe(BOB, "bob", f"t{i}") for i in range(limit)]
    with pytest.raises(ResourceExhausted) as refused:
        hub.subscribe(BOB, "bob", "one more")
    assert "\n" not in str(refused.value)
    hub.subscribe(ALICE, "alice", "t")  # another user is not affected
    hub.unsubscribe(streams[0])
    hub.subscribe(BOB, "bob", "again")


def test_delivery_goes_by_account_not_by_name() -> None:
    """A name deleted and registered again is a new account: the old owner's streams
    never see the new owner's messages, and closing one account leaves the other's."""
    hub = LiveHub()
    old = hub.subscribe(BOB, "bob", "old")
    new = hub.subscribe(BOB_AGAIN, "bob", "new")
    hub.deliver(message(1), BOB_AGAIN)
    assert (old.queued, new.queued) == (0, 1)
    hub.close_account(BOB)
    assert (old.queued, new.queued) == (1, 1)
    assert hub.is_online("bob")
    hub.unsubscribe(new)
    hub.unsubscribe(old)
    assert not hub.is_online("bob")


async def test_the_hub_caps_session_streams_apart_and_ends_them_when_closing_all() -> None:
    hub = LiveHub()
    with contextlib.ExitStack() as held:
        limit = live.STREAMS_PER_USER["Session"]
        closings = [held.enter_context(hub.session_stream(BOB)) for _ in range(limit)]
        with pytest.raises(ResourceExhausted) as refused, hub.session_stream(BOB):
            pass
        assert "\n" not in str(refused.value)
        hub.subscribe(BOB, "bob", "t")  # a subscription is counted apart
        assert not any(closing.done() for closing in closings)
        hub.close_all("stopping", "10.0.0.2:7001")
        ends = [closing.result() for closing in closings]
        assert [(str(end), end.leader_address) for end in ends] == [
            ("stopping", "10.0.0.2:7001")
        ] * limit
    with hub.session_stream(BOB):  # the slots are free again
        pass


# -- through the API ----------------------------------------------------------------------


async def test_a_ninth_stream_of_one_user_is_resource_exhausted(stub: Stub) -> None:
    bob = await signup(stub, "bob")
    streams = [
        stub.Subscribe(pb.SubscribeRequest(), metadata=bob)
        for _ in range(live.STREAMS_PER_USER["Subscribe"])
    ]
    try:
        for stream in streams:
            event = await asyncio.wait_for(stream.read(), timeout=5)
            assert event.WhichOneof("event") == "leader"
        extra = stub.Subscribe(pb.SubscribeRequest(), metadata=bob)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await asyncio.wait_for(extra.read(), timeout=5)
        assert caught.value.code() == CODE.RESOURCE_EXHAUSTED
        assert caught.value.details() and "\n" not in caught.value.details()
        # Closing one makes room (the server unregisters it when the call ends).
        streams.pop().cancel()
        async with asyncio.timeout(5):
            while True:
                again = stub.Subscribe(pb.SubscribeRequest(), metadata=bob)
                try:
                    await again.read()
                    break
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == CODE.RESOURCE_EXHAUSTED
        streams.append(again)
    finally:
        for stream in streams:
            stream.cancel()


async def test_a_stream_that_overflowed_catches_up_from_the_database(
    stub: Stub, node: ChatNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a tiny queue nearly every batch overflows it; the stream still delivers
    every message once, in order, by re-reading what it missed."""
    monkeypatch.setattr(live, "QUEUE_LIMIT", 2)
    alice = await signup(stub, "alice")
    bob = await signup(stub, "bob")
    stream = stub.Subscribe(pb.SubscribeRequest(), metadata=bob)
    await asyncio.wait_for(stream.read(), timeout=5)
    sends = [
        stub.SendMessage(pb.SendMessageRequest(recipient="bob", body=f"m{i}"), metadata=alice)
        for i in range(200)
    ]
    sent = sorted(r.message_id for r in await asyncio.gather(*sends))
    got = [(await asyncio.wait_for(stream.read(), timeout=5)).message.id for _ in sent]
    assert got == sent
    stream.cancel()


def test_the_hub_caps_streams_on_the_node_whatever_the_users(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(live, "STREAMS_TOTAL", 5)
    hub = LiveHub()
    streams = [hub.subscribe(account, f"u{account}", "t") for account in range(5)]
    with pytest.raises(ResourceExhausted, match="most open streams"):
        hub.subscribe(99, "u99", "t")
    hub.unsubscribe(streams[0])
    hub.subscribe(99, "u99", "t")
