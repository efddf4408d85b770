"""The Session stream's rules (proto/chat.proto, docs/design.md "Session streams"), over gRPC.

Order of effects and replies, flow control, bad frames, authentication for
the stream's whole life, live delivery on it, and exactly-once when a call is
re-sent on a new stream. Leader loss mid-stream, with real processes, is in
tests/cluster/test_client_failover.py, where the library re-sends over its stream.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from chatnode.live import STREAMS_PER_USER
from chatnode.local_cluster import free_port
from chatnode.server import DRAIN_SECONDS, ChatNode, NodeConfig
from chatnode.session_stream import REPLY_BYTES, RESERVED_BYTES
from proto import chat_pb2 as pb
from proto import chat_pb2_grpc
from proto.credentials import ClusterSecret
from proto.errors import from_call_error
from proto.session_calls import FRAME_FIELDS, IN_FLIGHT_MAX
from tests.support.nodes import PASSWORD, elected, in_process_cluster, signup, wait_until_serving

CODE = grpc.StatusCode
WAIT_S = 10.0


class Stream:
    """One open Session stream, read with a bound on every wait."""

    def __init__(self, stub: chat_pb2_grpc.ChatServiceStub, auth) -> None:
        self.call_auth = auth
        self.call = stub.Session(metadata=auth)

    async def send(self, request_id: str, **call) -> None:
        await self.call.write(pb.ClientFrame(request_id=request_id, **call))

    async def read(self) -> pb.ServerFrame:
        async with asyncio.timeout(WAIT_S):
            frame = await self.call.read()
        assert frame is not grpc.aio.EOF, "the stream ended"
        return frame

    async def opened(self) -> pb.ServerFrame:
        first = await self.read()
        assert first.WhichOneof("event") == "leader" and first.leader.leader_id == 1
        return first

    async def ended(self, code: grpc.StatusCode) -> str:
        """Read until the stream fails; assert its status and a one-line message."""
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async with asyncio.timeout(WAIT_S):
                while await self.call.read() is not grpc.aio.EOF:
                    pass
        assert caught.value.code() == code, caught.value.details()
        details = caught.value.details()
        assert details and "\n" not in details and "Traceback" not in details
        return details


def send(recipient: str, body: str = "hi") -> dict:
    return {"send_message": pb.SendMessageRequest(recipient=recipient, body=body)}


def error_of(frame: pb.ServerFrame) -> grpc.StatusCode:
    assert frame.WhichOneof("event") == "error", frame
    assert frame.error.message and "\n" not in frame.error.message
    return from_call_error(frame.error).code


@pytest.fixture
async def alice(stub: chat_pb2_grpc.ChatServiceStub) -> AsyncIterator[Stream]:
    auth = await signup(stub, "alice")
    await signup(stub, "bob")
    stream = Stream(stub, auth)
    await stream.opened()
    yield stream
    stream.call.cancel()


# -- order and exactly-once --------------------------------------------------------


async def test_pipelined_calls_take_effect_and_are_answered_in_the_order_sent(
    alice: Stream,
) -> None:
    """Calls kept a full window ahead of the replies (IN_FLIGHT_MAX unanswered, never more,
    which would be refused at once): replies come back tagged, in the order sent, and the
    message ids (commit order) increase in that order too."""
    ids = [f"r{i}" for i in range(200)]
    for request_id in ids[:IN_FLIGHT_MAX]:
        await alice.send(request_id, **send("bob", request_id))
    replies = []
    for request_id in ids[IN_FLIGHT_MAX:]:
        replies.append(await alice.read())
        await alice.send(request_id, **send("bob", request_id))
    replies += [await alice.read() for _ in range(IN_FLIGHT_MAX)]
    assert [r.request_id for r in replies] == ids
    message_ids = [r.send_message.message_id for r in replies]
    assert message_ids == sorted(message_ids) and len(set(message_ids)) == len(ids)


async def test_writes_on_one_leadership_pass_the_read_barrier_once_not_per_frame(
    node: ChatNode, alice: Stream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write's reply comes from applying its own entry, so the leader checks its lease and
    its state's catch-up once per leadership for writes (docs/design.md, "Serving
    rules"), not once per frame."""
    await alice.send("first", **send("bob"))
    assert (await alice.read()).WhichOneof("event") == "send_message"
    barriers = 0
    read_barrier = node.coordinator.read_barrier

    async def counted() -> int:
        nonlocal barriers
        barriers += 1
        return await read_barrier()

    monkeypatch.setattr(node.coordinator, "read_barrier", counted)
    for i in range(8):
        await alice.send(f"w{i}", **send("bob"))
    replies = [await alice.read() for _ in range(8)]
    assert [r.WhichOneof("event") for r in replies] == ["send_message"] * 8
    assert barriers <= 1


async def test_closing_the_sending_side_ends_the_stream_once_every_reply_is_written(
    alice: Stream,
) -> None:
    for i in range(3):
        await alice.send(f"r{i}", **send("bob"))
    await alice.call.done_writing()
    assert [(await alice.read()).request_id for _ in range(3)] == ["r0", "r1", "r2"]
    async with asyncio.timeout(WAIT_S):
        assert await alice.call.read() is grpc.aio.EOF
    assert await alice.call.code() == CODE.OK


async def test_mixed_calls_are_answered_in_order_with_their_own_reply_kinds(
    alice: Stream, stub: chat_pb2_grpc.ChatServiceStub
) -> None:
    bob = Stream(stub, await login(stub, "bob"))
    await bob.opened()
    await alice.send("s1", **send("bob", "one"))
    await alice.send("s2", **send("bob", "two"))
    await alice.send("l1", list_accounts=pb.ListAccountsRequest(pattern="*"))
    replies = [await alice.read() for _ in range(3)]
    assert [r.WhichOneof("event") for r in replies] == ["send_message"] * 2 + ["list_accounts"]
    assert list(replies[2].list_accounts.usernames) == ["alice", "bob"]
    await bob.send("r1", read_messages=pb.ReadMessagesRequest(limit=10))
    await bob.send(
        "m1", mark_read=pb.MarkReadRequest(message_ids=[replies[0].send_message.message_id])
    )
    await bob.send(
        "d1",
        delete_messages=pb.DeleteMessagesRequest(message_ids=[replies[1].send_message.message_id]),
    )
    read, marked, deleted = [await bob.read() for _ in range(3)]
    assert [m.body for m in read.read_messages.messages] == ["one", "two"]
    assert marked.mark_read.marked_count == 0  # ReadMessages already marked them read
    assert deleted.delete_messages.deleted_count == 1
    bob.call.cancel()


async def test_a_call_re_sent_on_a_new_stream_is_answered_once_with_the_first_result(
    alice: Stream, stub: chat_pb2_grpc.ChatServiceStub
) -> None:
    """What a client does after a broken stream: the same request_id on a new stream (or a
    unary retry) gets the first reply, and the message is stored once."""
    await alice.send("once", **send("bob", "only once"))
    first = (await alice.read()).send_message.message_id
    alice.call.cancel()
    auth = await login(stub, "alice")
    retry = Stream(stub, auth)
    await retry.opened()
    await retry.send("once", **send("bob", "only once"))
    assert (await retry.read()).send_message.message_id == first
    unary = await stub.SendMessage(
        pb.SendMessageRequest(recipient="bob", body="only once", request_id="once"), metadata=auth
    )
    assert unary.message_id == first
    unread = await stub.ReadMessages(
        pb.ReadMessagesRequest(limit=100), metadata=await login(stub, "bob")
    )
    assert [m.body for m in unread.messages] == ["only once"]
    retry.call.cancel()


# -- flow control ------------------------------------------------------------------


async def test_frames_beyond_the_in_flight_bound_are_refused_at_once_and_change_nothing(
    alice: Stream,
    node: ChatNode,
    stub: chat_pb2_grpc.ChatServiceStub,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With commits held back, the bound's worth of calls wait; the next ones get
    RESOURCE_EXHAUSTED before any reply, and once commits flow the waiting ones are
    answered in order and the stream carries on."""
    gate = asyncio.Event()
    submit = node.applier.submit

    def held(op):
        applied = submit(op)

        async def later():
            await gate.wait()
            return await applied

        return asyncio.ensure_future(later())

    monkeypatch.setattr(node.applier, "submit", held)
    extra = [f"r{i}" for i in range(IN_FLIGHT_MAX, IN_FLIGHT_MAX + 3)]
    for i in range(IN_FLIGHT_MAX + 3):
        await alice.send(f"r{i}", **send("bob", f"m{i}"))
    refused = [await alice.read() for _ in extra]
    assert [r.request_id for r in refused] == extra
    assert {error_of(r) for r in refused} == {CODE.RESOURCE_EXHAUSTED}
    gate.set()
    answered = [await alice.read() for _ in range(IN_FLIGHT_MAX)]
    assert [r.request_id for r in answered] == [f"r{i}" for i in range(IN_FLIGHT_MAX)]
    assert all(r.WhichOneof("event") == "send_message" for r in answered)
    await alice.send("after", **send("bob", "after"))
    assert (await alice.read()).WhichOneof("event") == "send_message"
    unread = await stub.ReadMessages(
        pb.ReadMessagesRequest(limit=1000), metadata=await login(stub, "bob")
    )
    assert len(unread.messages) == IN_FLIGHT_MAX + 1  # nothing refused was stored


# -- bad frames ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        pytest.param(pb.ClientFrame(**send("bob")), CODE.INVALID_ARGUMENT, id="no-request-id"),
        pytest.param(
            pb.ClientFrame(request_id="x" * 129, **send("bob")),
            CODE.INVALID_ARGUMENT,
            id="request-id-too-long",
        ),
        pytest.param(pb.ClientFrame(request_id="q"), CODE.INVALID_ARGUMENT, id="no-call"),
        pytest.param(
            pb.ClientFrame(
                request_id="q",
                send_message=pb.SendMessageRequest(recipient="bob", body="x", request_id="other"),
            ),
            CODE.INVALID_ARGUMENT,
            id="inner-request-id-differs",
        ),
        pytest.param(
            pb.ClientFrame(request_id="q", **send("bob", "")),
            CODE.INVALID_ARGUMENT,
            id="empty-body",
        ),
        pytest.param(
            pb.ClientFrame(request_id="q", **send("bad name")),
            CODE.INVALID_ARGUMENT,
            id="bad-recipient",
        ),
        pytest.param(
            pb.ClientFrame(request_id="q", **send("nobody")), CODE.NOT_FOUND, id="unknown-recipient"
        ),
        pytest.param(
            pb.ClientFrame(request_id="q", list_accounts=pb.ListAccountsRequest(page_token="%%")),
            CODE.INVALID_ARGUMENT,
            id="bad-page-token",
        ),
    ],
)
async def test_a_bad_frame_gets_a_clear_error_and_the_stream_stays_usable(
    alice: Stream, frame: pb.ClientFrame, code: grpc.StatusCode
) -> None:
    await alice.call.write(frame)
    refused = await alice.read()
    assert refused.request_id == frame.request_id and error_of(refused) == code
    await alice.send("next", **send("bob"))
    assert (await alice.read()).WhichOneof("event") == "send_message"


async def test_an_undecodable_frame_gets_invalid_argument_and_the_stream_stays_usable(
    node: ChatNode, stub: chat_pb2_grpc.ChatServiceStub
) -> None:
    auth = await signup(stub, "alice")
    async with grpc.aio.insecure_channel(node.config.address) as channel:
        raw = channel.stream_stream(
            "/chat.v1.ChatService/Session",
            request_serializer=lambda b: b,
            response_deserializer=pb.ServerFrame.FromString,
        )(metadata=auth)
        assert (await raw.read()).WhichOneof("event") == "leader"
        await raw.write(b"\xff\xff\xff\xff")
        refused = await raw.read()
        assert refused.request_id == "" and error_of(refused) == CODE.INVALID_ARGUMENT
        await raw.write(pb.ClientFrame(request_id="ok", **send("alice")).SerializeToString())
        assert (await raw.read()).request_id == "ok"
        raw.cancel()


async def test_a_second_subscribe_on_one_stream_is_refused(alice: Stream) -> None:
    await alice.send("sub1", subscribe=pb.SubscribeRequest())
    assert (await alice.read()).WhichOneof("event") == "subscribe"
    await alice.send("sub2", subscribe=pb.SubscribeRequest())
    assert error_of(await alice.read()) == CODE.INVALID_ARGUMENT


async def test_a_user_holds_a_bounded_number_of_open_streams(
    stub: chat_pb2_grpc.ChatServiceStub,
) -> None:
    auth = await signup(stub, "carol")
    streams = [Stream(stub, auth) for _ in range(STREAMS_PER_USER["Session"])]
    for stream in streams:
        await stream.opened()
    await Stream(stub, auth).ended(CODE.RESOURCE_EXHAUSTED)
    streams.pop().call.cancel()
    async with asyncio.timeout(WAIT_S):  # the server notices the cancel soon after
        while True:
            again = Stream(stub, auth)
            try:
                await again.opened()
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == CODE.RESOURCE_EXHAUSTED
                await asyncio.sleep(0.05)
    for stream in (*streams, again):
        stream.call.cancel()


# -- authentication for the stream's life --------------------------------------------


async def test_a_stream_without_a_valid_token_is_refused(
    stub: chat_pb2_grpc.ChatServiceStub,
) -> None:
    for auth in ((), (("authorization", "Bearer not-a-token"),)):
        await Stream(stub, auth).ended(CODE.UNAUTHENTICATED)


async def test_a_session_ended_elsewhere_ends_the_stream_at_its_next_call(
    alice: Stream, stub: chat_pb2_grpc.ChatServiceStub
) -> None:
    await alice.send("before", **send("bob"))
    assert (await alice.read()).request_id == "before"
    await stub.Logout(pb.LogoutRequest(), metadata=alice.call_auth)
    await alice.send("after", **send("bob"))
    await alice.ended(CODE.UNAUTHENTICATED)


async def test_a_subscribed_stream_ends_when_its_session_ends(
    alice: Stream, stub: chat_pb2_grpc.ChatServiceStub
) -> None:
    await alice.send("sub", subscribe=pb.SubscribeRequest())
    assert (await alice.read()).WhichOneof("event") == "subscribe"
    await stub.Logout(pb.LogoutRequest(), metadata=alice.call_auth)
    await alice.ended(CODE.UNAUTHENTICATED)


async def test_logout_on_the_stream_is_answered_then_the_stream_ends(alice: Stream) -> None:
    await alice.send("sub", subscribe=pb.SubscribeRequest())
    await alice.send("bye", logout=pb.LogoutRequest())
    assert (await alice.read()).WhichOneof("event") == "subscribe"
    assert (await alice.read()).WhichOneof("event") == "logout"
    await alice.ended(CODE.UNAUTHENTICATED)


async def test_a_long_lived_stream_ends_when_its_session_expires(tmp_path: Path) -> None:
    """Each call on a stream is a use of its session: while used it stays valid past the
    TTL; once unused for longer, the next call ends the stream with UNAUTHENTICATED."""
    ttl_ms = 60_000
    clock = [1_700_000_000_000]
    node = ChatNode(
        NodeConfig(
            node_id=1,
            cluster={1: f"127.0.0.1:{free_port()}"},
            data_dir=tmp_path / "n1",
            session_ttl_ms=ttl_ms,
            wall_clock_ms=lambda: clock[0],
            monotonic_clock_ms=lambda: clock[0],
        )
    )
    await node.start()
    try:
        await wait_until_serving(node)
        async with grpc.aio.insecure_channel(node.config.address) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            auth = await signup(stub, "alice")
            stream = Stream(stub, auth)
            await stream.opened()
            for step in range(4):  # used every half TTL: renewed, valid well past one TTL
                clock[0] += ttl_ms // 2
                await stream.send(f"use{step}", **send("alice"))
                assert (await stream.read()).WhichOneof("event") == "send_message"
            clock[0] += 2 * ttl_ms
            await stream.send("late", **send("alice"))
            await stream.ended(CODE.UNAUTHENTICATED)
    finally:
        await node.stop()


# -- live delivery and leadership ----------------------------------------------------------


async def test_subscribe_on_the_stream_delivers_stored_then_live_messages_in_order(
    alice: Stream, stub: chat_pb2_grpc.ChatServiceStub
) -> None:
    bob = await login(stub, "bob")
    for body in ("stored1", "stored2"):
        await stub.SendMessage(pb.SendMessageRequest(recipient="alice", body=body), metadata=bob)
    await alice.send("sub", subscribe=pb.SubscribeRequest(after_id=0))
    assert (await alice.read()).WhichOneof("event") == "subscribe"
    await stub.SendMessage(pb.SendMessageRequest(recipient="alice", body="live"), metadata=bob)
    frames = [await alice.read() for _ in range(3)]
    assert [f.message.body for f in frames] == ["stored1", "stored2", "live"]
    assert all(f.request_id == "" for f in frames)


async def test_a_stream_to_a_follower_is_unavailable_with_the_leaders_address(
    tmp_path: Path,
) -> None:
    secret = ClusterSecret(secrets.token_bytes(32))
    async with in_process_cluster(tmp_path, lambda i: {"cluster_secret": secret}) as nodes:
        leader = await elected(nodes)
        follower = next(n for n in nodes if n is not leader)
        async with grpc.aio.insecure_channel(leader.config.address) as channel:
            auth = await signup(chat_pb2_grpc.ChatServiceStub(channel), "alice")
        async with grpc.aio.insecure_channel(follower.config.address) as channel:
            call = chat_pb2_grpc.ChatServiceStub(channel).Session(metadata=auth)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async with asyncio.timeout(WAIT_S):
                    await call.read()
        assert caught.value.code() == CODE.UNAVAILABLE
        assert ("leader-address", leader.config.address) in tuple(
            caught.value.trailing_metadata() or ()
        )


async def test_a_stopping_node_ends_idle_streams_with_unavailable_at_once(
    tmp_path: Path,
) -> None:
    """Shutdown ends every stream, subscribed or not, as it ends Subscribe streams: the
    client moves to the leader now rather than when the drain runs out."""
    config = NodeConfig(node_id=1, cluster={1: f"127.0.0.1:{free_port()}"}, data_dir=tmp_path)
    node = ChatNode(config)
    await node.start()
    stopping: asyncio.Task[None] | None = None
    try:
        await wait_until_serving(node)
        async with grpc.aio.insecure_channel(config.address) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            stream = Stream(stub, await signup(stub, "alice"))
            await stream.opened()
            stopping = asyncio.create_task(node.stop())
            async with asyncio.timeout(DRAIN_SECONDS / 2):
                await stream.ended(CODE.UNAVAILABLE)
    finally:
        await (stopping if stopping is not None else node.stop())


async def login(stub: chat_pb2_grpc.ChatServiceStub, name: str):
    reply = await stub.Login(pb.LoginRequest(username=name, password=PASSWORD))
    return (("authorization", f"Bearer {reply.session_token}"),)


async def test_a_stream_that_is_not_read_holds_a_bounded_number_of_large_replies(
    stub: chat_pb2_grpc.ChatServiceStub,
) -> None:
    """Sixteen reads of about 3 MiB each, sent on a stream whose client never reads: the
    stream starts a read only while its reply budget has room, so the reads wait in the
    client's frames (HTTP/2 pushes back) instead of in the server's memory."""
    auth = await signup(stub, "alice")
    sender = await signup(stub, "bob")
    reads, batch = 16, 47  # a reply holds at most 3 MiB of bodies: 47 of 64 KiB
    big = pb.SendMessageRequest(recipient="alice", body="x" * 65_536)
    for _ in range(reads * batch // 47):
        await asyncio.gather(*(stub.SendMessage(big, metadata=sender) for _ in range(47)))
    greedy = Stream(stub, auth)
    await greedy.opened()
    for i in range(reads):
        await greedy.send(f"r{i}", read_messages=pb.ReadMessagesRequest(limit=1000))
    await asyncio.sleep(2.0)  # let the server take what it will; nothing is read meanwhile
    second = Stream(stub, auth)
    await second.opened()
    await second.send("count", read_messages=pb.ReadMessagesRequest(limit=1))
    remaining = (await second.read()).read_messages.remaining_unread
    started = reads * batch - 1 - remaining  # messages the first stream's reads took
    budget = REPLY_BYTES // RESERVED_BYTES["read_messages"]
    # The budget's reads, and the few whose replies the transport took off its hands.
    assert started <= min(budget + 4, reads // 2) * batch, f"{started // batch} reads started"
    greedy.call.cancel()
    second.call.cancel()


def test_every_frame_call_but_subscribe_has_its_start(node: ChatNode) -> None:
    """A call added to the frame (proto.session_calls reads them from chat.proto) needs its
    start in ChatService.stream_calls, or a stream could carry a call nobody serves."""
    assert set(node.service.stream_calls) == set(FRAME_FIELDS.values()) - {"subscribe"}
