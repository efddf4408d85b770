"""The client library against a real single node, and against fakes that misbehave on cue.

Fakes are tiny grpc.aio servers speaking ChatService as raw bytes: one that
redirects everything to the real node with a ``leader-address`` hint, one
that claims a stale leadership, one that never answers, and a forwarding
proxy that loses a reply after the node has acted on the request (a unary
reply, or a reply on a Session stream, which it then breaks).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from chatnode.local_cluster import free_port
from chatnode.server import ChatNode, NodeConfig
from client.library import (
    STREAMED_CALLS,
    AlreadyExists,
    AuthError,
    ChatClient,
    ClientState,
    Connection,
    InvalidArgument,
    NotFound,
    RetryPolicy,
    Unavailable,
    with_request_id,
)
from client.sync import SyncChatClient
from proto import chat_pb2 as pb
from tests.support.clients import Inbox, StateLog
from tests.support.nodes import PASSWORD

SERVICE = pb.DESCRIPTOR.services_by_name["ChatService"]
QUICK = RetryPolicy(deadline_s=1.0, probe_timeout_s=0.3)
WAIT_S = 15.0

Handler = Callable[[str, bytes, grpc.aio.ServicerContext], Awaitable[bytes]]


# -- helpers ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    """A server answering every unary ChatService method with handler(method, bytes, ctx)."""
    server = grpc.aio.server()

    def bind(name: str) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]:
        async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return await handler(name, request, context)

        return handle  # grpc.aio runs only coroutine *functions* as async handlers

    methods = {
        m.name: grpc.unary_unary_rpc_method_handler(bind(m.name))
        for m in SERVICE.methods
        if not m.server_streaming
    }
    if isinstance(handler, Proxy):
        methods["Session"] = grpc.stream_stream_rpc_method_handler(handler.session)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE.full_name, methods),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


async def redirect(context: grpc.aio.ServicerContext, leader: str) -> bytes:
    await context.abort(
        grpc.StatusCode.UNAVAILABLE,
        "not the leader",
        trailing_metadata=(("leader-address", leader),),
    )
    raise AssertionError("abort returns only by raising")


@dataclass
class Proxy:
    """Forwards to target; after forwarding a `drop` method, loses the reply once."""

    target: str
    drop: str = ""
    seen: list[bytes] = field(default_factory=list)
    replies: list[bytes] = field(default_factory=list)
    lost: asyncio.Event = field(default_factory=asyncio.Event)  # the one reply was lost

    async def __call__(
        self, method: str, request: bytes, context: grpc.aio.ServicerContext
    ) -> bytes:
        metadata = [(k, v) for k, v in context.invocation_metadata() if k == "authorization"]
        async with grpc.aio.insecure_channel(self.target) as channel:
            try:
                reply = await channel.unary_unary(f"/{SERVICE.full_name}/{method}")(
                    request, metadata=metadata
                )
            except grpc.aio.AioRpcError as exc:
                await context.abort(exc.code(), exc.details())
        if method == self.drop:
            self.seen.append(request)
            self.replies.append(reply)
            if len(self.seen) == 1:
                self.lost.set()
                await context.abort(grpc.StatusCode.UNAVAILABLE, "connection lost (simulated)")
        return reply

    async def session(
        self, frames: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """A Session stream, forwarded frame by frame; the first reply of the `drop` kind
        is lost and the stream broken, as a connection lost in a failover would."""
        field = STREAMED_CALLS.get(self.drop, "")
        metadata = [(k, v) for k, v in context.invocation_metadata() if k == "authorization"]
        async with grpc.aio.insecure_channel(self.target) as channel:
            upstream = channel.stream_stream(f"/{SERVICE.full_name}/Session")(metadata=metadata)

            async def forward_frames() -> None:
                async for frame in frames:
                    call = pb.ClientFrame.FromString(frame)
                    if field and call.WhichOneof("call") == field:
                        self.seen.append(getattr(call, field).SerializeToString())
                    await upstream.write(frame)

            forwarding = asyncio.create_task(forward_frames())
            try:
                async for raw in upstream:
                    reply = pb.ServerFrame.FromString(raw)
                    if field and reply.WhichOneof("event") == field:
                        self.replies.append(getattr(reply, field).SerializeToString())
                        if len(self.replies) == 1:
                            self.lost.set()
                            await context.abort(
                                grpc.StatusCode.UNAVAILABLE, "connection lost (simulated)"
                            )
                    yield raw
            finally:
                forwarding.cancel()


async def user(
    members: list[str], name: str, policy: RetryPolicy | None = None, unary: bool = False
) -> ChatClient:
    client = ChatClient(members, policy=policy, unary=unary)
    await client.create_account(name, PASSWORD)
    await client.login(name, PASSWORD)
    return client


@pytest.fixture
async def members(node: ChatNode) -> list[str]:
    return [node.config.address]


@pytest.fixture
async def alice(members: list[str]) -> AsyncIterator[ChatClient]:
    client = await user(members, "alice")
    yield client
    await client.close()


@pytest.fixture
async def bob(members: list[str]) -> AsyncIterator[ChatClient]:
    client = await user(members, "bob")
    yield client
    await client.close()


# -- back-off ---------------------------------------------------------------------


def test_backoff_grows_exponentially_is_capped_and_jittered() -> None:
    policy = RetryPolicy(first_backoff_s=0.1, max_backoff_s=1.0, multiplier=2.0, jitter=0.5)
    rng = random.Random(7)
    for attempt, ceiling in enumerate([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]):
        pauses = {policy.backoff(attempt, rng) for _ in range(50)}
        assert all(ceiling * 0.5 <= p <= ceiling for p in pauses)
        assert len(pauses) > 1, "pauses must be jittered"


# -- every call, success and typed errors -------------------------------------------


async def test_accounts_and_their_typed_errors(members: list[str]) -> None:
    async with ChatClient(members) as client:
        await client.create_account("carol", PASSWORD)
        with pytest.raises(AlreadyExists, match="taken") as taken:
            await client.create_account("carol", PASSWORD)
        assert taken.value.code == grpc.StatusCode.ALREADY_EXISTS
        with pytest.raises(InvalidArgument, match="username"):
            await client.create_account("bad name", PASSWORD)
        with pytest.raises(InvalidArgument, match="password"):
            await client.create_account("dave", "short")
        with pytest.raises(AuthError) as wrong:
            await client.login("carol", "not the password")
        with pytest.raises(AuthError) as unknown:
            await client.login("nobody", PASSWORD)
        assert str(wrong.value) == str(unknown.value) == "wrong username or password"
        session = await client.login("carol", PASSWORD)
        assert (session.username, session.unread_count, session.last_message_id) == ("carol", 0, 0)
        assert client.username == "carol"
        await client.logout()
        assert client.username == ""
        with pytest.raises(AuthError, match="log in"):
            await client.list_accounts()


async def test_list_accounts_by_pattern_in_pages(alice: ChatClient, members: list[str]) -> None:
    for name in ("ann", "anna", "bert"):
        async with ChatClient(members) as client:
            await client.create_account(name, PASSWORD)
    page = await alice.list_accounts("an*", page_size=1)
    assert page.usernames == ("ann",) and page.next_page_token
    rest = await alice.list_accounts("an*", page_size=10, page_token=page.next_page_token)
    assert rest.usernames == ("anna",) and rest.next_page_token == ""
    assert (await alice.list_accounts()).usernames == ("alice", "ann", "anna", "bert")


async def test_send_read_mark_and_delete(alice: ChatClient, bob: ChatClient) -> None:
    first = await alice.send_message("bob", "one")
    second = await alice.send_message("bob", "two")
    assert second.message_id > first.message_id and not first.recipient_online
    unread = await bob.read_messages(limit=1)
    assert [m.body for m in unread.messages] == ["one"] and unread.remaining == 1
    assert unread.messages[0].sender == "alice" and unread.messages[0].sent_at_ms > 0
    assert await bob.mark_read([second.message_id, 999_999]) == 1
    assert (await bob.read_messages()).messages == ()
    assert await bob.delete_messages([first.message_id, second.message_id, 999_999]) == 2
    with pytest.raises(NotFound, match="nobody"):
        await alice.send_message("nobody", "hello?")
    with pytest.raises(InvalidArgument, match="body"):
        await alice.send_message("bob", "")


async def test_delete_account_checks_the_password(alice: ChatClient, members: list[str]) -> None:
    with pytest.raises(AuthError, match="wrong password"):
        await alice.delete_account("not the password")
    await alice.delete_account(PASSWORD)
    assert alice.username == ""
    async with ChatClient(members) as client:
        with pytest.raises(AuthError):
            await client.login("alice", PASSWORD)


async def test_cluster_status_reports_the_leader_as_state(members: list[str]) -> None:
    async with ChatClient(members) as client:
        assert client.state.connection == Connection.CONNECTING
        status = await client.cluster_status()
        assert status.role == "leader" and status.node_id == 1
        assert client.state == ClientState(Connection.CONNECTED, 1, members[0], status.term)


async def test_subscribe_streams_stored_then_live(alice: ChatClient, bob: ChatClient) -> None:
    stored = await alice.send_message("bob", "stored")
    inbox = Inbox(bob)
    try:
        assert [m.id for m in await inbox.wait_for(1)] == [stored.message_id]
        live = await alice.send_message("bob", "live")
        assert live.recipient_online
        assert [m.body for m in await inbox.wait_for(2)] == ["stored", "live"]
    finally:
        await inbox.close()


async def test_subscribe_without_a_session_is_an_auth_error(members: list[str]) -> None:
    async with ChatClient(members) as client:
        with pytest.raises(AuthError):
            await anext(client.subscribe())


async def test_sync_wrapper_makes_the_same_calls(members: list[str]) -> None:
    def scenario() -> list[str]:
        with SyncChatClient(members) as erin, SyncChatClient(members) as fred:
            for client, name in ((erin, "erin"), (fred, "fred")):
                client.create_account(name, PASSWORD)
                client.login(name, PASSWORD)
            with pytest.raises(NotFound):
                erin.send_message("nobody", "x")
            erin.send_message("fred", "hi fred")
            assert fred.state.connection == Connection.CONNECTED
            stream = fred.subscribe()
            bodies = [next(stream).body]
            stream.close()
            return bodies

    assert await asyncio.to_thread(scenario) == ["hi fred"]


# -- finding and following the leader ----------------------------------------------


async def test_a_dead_member_is_skipped(members: list[str]) -> None:
    dead = f"127.0.0.1:{free_port()}"
    async with ChatClient([dead, *members]) as client:
        await client.create_account("gina", PASSWORD)
        assert client.state.address == members[0]


async def test_a_leader_hint_while_looking_is_followed(members: list[str]) -> None:
    async def handler(method: str, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await redirect(context, members[0])

    async with serving(handler) as follower, ChatClient([follower]) as client:
        await client.create_account("hank", PASSWORD)
        assert client.state.connection == Connection.CONNECTED
        assert client.state.address == members[0]


async def test_unavailable_with_a_leader_address_is_followed(members: list[str]) -> None:
    """A deposed leader (older term) still claims to lead but refuses calls with a hint."""

    async def handler(method: str, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if method == "GetClusterStatus":
            return pb.ClusterStatus(node_id=9, role="leader", term=0).SerializeToString()
        return await redirect(context, members[0])

    async with serving(handler) as stale, ChatClient([stale]) as client:
        log = StateLog(client)
        await client.create_account("ivan", PASSWORD)
        assert [s.connection for s in log.states] == [
            Connection.CONNECTING,
            Connection.CONNECTED,
            Connection.FAILING_OVER,
            Connection.CONNECTED,
        ]
        assert log.states[1].leader_id == 9 and log.states[-1].leader_id == 1
        assert client.state.address == members[0]


@pytest.mark.parametrize("unary", [False, True], ids=["stream", "unary"])
async def test_a_retry_reuses_the_request_id_so_one_message_is_stored(
    members: list[str], bob: ChatClient, unary: bool
) -> None:
    proxy = Proxy(members[0], drop="SendMessage")
    async with serving(proxy) as address:
        sender = await user([address], "jane", unary=unary)
        try:
            sent = await sender.send_message("bob", "exactly once")
        finally:
            await sender.close()
    # Two attempts, or more when the node also blipped its leadership meanwhile: one id.
    first, *retries = (pb.SendMessageRequest.FromString(r) for r in proxy.seen)
    assert retries and first.request_id and all(r == first for r in retries)
    assert sent.message_id == pb.SendMessageResponse.FromString(proxy.replies[0]).message_id
    unread = await bob.read_messages()
    assert [m.body for m in unread.messages] == ["exactly once"] and unread.remaining == 0


LOST_REPLY_CALLS: dict[str, Callable[[ChatClient, list[int]], Awaitable[object]]] = {
    "ReadMessages": lambda client, ids: client.read_messages(2),
    "MarkRead": lambda client, ids: client.mark_read(ids),
    "DeleteMessages": lambda client, ids: client.delete_messages(ids[:2]),
    "Logout": lambda client, ids: client.logout(),
    "DeleteAccount": lambda client, ids: client.delete_account(PASSWORD),
}


@pytest.mark.parametrize("unary", [False, True], ids=["stream", "unary"])
@pytest.mark.parametrize("method", sorted(LOST_REPLY_CALLS))
async def test_a_call_whose_reply_is_lost_is_retried_with_its_id_and_acts_once(
    members: list[str], bob: ChatClient, method: str, unary: bool
) -> None:
    """The proxy loses the first reply after the node acted: the library retries with
    the same request id and gets the first attempt's reply, not a second action."""
    proxy = Proxy(members[0], drop=method)
    async with serving(proxy) as address:
        jane = await user([address], "jane", unary=unary)
        ids = [(await bob.send_message("jane", f"m{i}")).message_id for i in range(3)]
        try:
            result = await LOST_REPLY_CALLS[method](jane, ids)
        finally:
            await jane.close()
    request_type = getattr(pb, SERVICE.methods_by_name[method].input_type.name)
    # Two attempts, or more when the node also blipped its leadership meanwhile: one id,
    # and every reply the node gave is the first one.
    first, *retries = (request_type.FromString(r) for r in proxy.seen)
    assert retries and first.request_id and all(r == first for r in retries)
    assert len(proxy.replies) >= 2 and all(r == proxy.replies[0] for r in proxy.replies)
    expected: dict[str, object] = {"MarkRead": 3, "DeleteMessages": 2}
    if method == "ReadMessages":
        assert [m.id for m in result.messages] == ids[:2] and result.remaining == 1
    elif method in expected:
        assert result == expected[method]


def test_every_mutating_request_is_stamped_with_a_request_id() -> None:
    mutating = ["CreateAccount", "Login", "Logout", "SendMessage", "ReadMessages", "MarkRead",
                "DeleteMessages", "DeleteAccount"]  # fmt: skip
    for method in mutating:
        request = getattr(pb, SERVICE.methods_by_name[method].input_type.name)()
        stamped = with_request_id(request)
        assert stamped.request_id and stamped.request_id != with_request_id(request).request_id
        assert with_request_id(stamped) is stamped  # retries keep the id they were given


async def test_the_deadline_is_honoured_when_nothing_answers() -> None:
    async def silent(method: str, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    dead = f"127.0.0.1:{free_port()}"
    async with serving(silent) as hung, ChatClient([dead, hung], policy=QUICK) as client:
        started = time.monotonic()
        with pytest.raises(Unavailable, match=r"within 1s"):
            await client.create_account("kim", PASSWORD)
        assert time.monotonic() - started < QUICK.deadline_s + 0.5
        assert client.state.connection == Connection.NO_LEADER


# -- resuming a subscription --------------------------------------------------------


@dataclass
class RestartableNode:
    """An in-process node that can be stopped and started again on its data dir and port."""

    config: NodeConfig
    node: ChatNode | None = None

    async def start(self) -> None:
        self.node = ChatNode(self.config)
        await self.node.start()

    async def stop(self) -> None:
        if self.node is not None:
            await self.node.stop()
            self.node = None


@pytest.fixture
async def restartable(tmp_path: Path) -> AsyncIterator[RestartableNode]:
    config = NodeConfig(node_id=1, cluster={1: f"127.0.0.1:{free_port()}"}, data_dir=tmp_path / "n")
    node = RestartableNode(config)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


async def test_a_subscription_resumes_after_a_restart_without_gap_or_duplicate(
    restartable: RestartableNode,
) -> None:
    members = [restartable.config.address]
    sender, reader = await user(members, "sender"), await user(members, "reader")
    log = StateLog(reader)
    inbox = Inbox(reader)
    try:
        sent = [(await sender.send_message("reader", "before")).message_id]
        await inbox.wait_for(1)
        await restartable.stop()  # ends the open stream with UNAVAILABLE
        await log.wait_for(lambda s: s.connection != Connection.CONNECTED)
        await restartable.start()
        for body in ("during", "after"):
            sent.append((await sender.send_message("reader", body)).message_id)
        received = await inbox.wait_for(3)
        assert [m.id for m in received] == sent
        assert [m.body for m in received] == ["before", "during", "after"]
        assert Connection.FAILING_OVER in [s.connection for s in log.states]
        assert (await log.wait_for(lambda s: s.term == 2)).connection == Connection.CONNECTED
    finally:
        await inbox.close()
        await sender.close()
        await reader.close()


# -- a call is its caller's, and pipelined calls keep their order -------------------------


SLOW_RETRY = RetryPolicy(deadline_s=10.0, first_backoff_s=1.0, jitter=0.0)


@pytest.mark.parametrize("unary", [False, True], ids=["stream", "unary"])
async def test_a_retry_acts_as_the_session_that_made_the_call(
    members: list[str], bob: ChatClient, unary: bool
) -> None:
    """The app logs in as someone else while a send waits to be retried: the retry still
    carries the first session, so the message is jane's, once, and nobody else's."""
    await user(members, "mallory")
    proxy = Proxy(members[0], drop="SendMessage")
    async with serving(proxy) as address:
        jane = await user([address], "jane", policy=SLOW_RETRY, unary=unary)
        try:
            sending = asyncio.create_task(jane.send_message("bob", "from jane"))
            await asyncio.wait_for(proxy.lost.wait(), WAIT_S)  # acted on, reply lost
            await jane.login("mallory", PASSWORD)  # during the retry's back-off
            await sending
        finally:
            await jane.close()
    unread = await bob.read_messages()
    assert [(m.sender, m.body) for m in unread.messages] == [("jane", "from jane")]


async def test_a_send_retried_after_logout_returns_its_first_reply(
    members: list[str], bob: ChatClient
) -> None:
    proxy = Proxy(members[0], drop="SendMessage")
    async with serving(proxy) as address:
        jane = await user([address], "jane", policy=SLOW_RETRY, unary=True)
        try:
            sending = asyncio.create_task(jane.send_message("bob", "before logout"))
            await asyncio.wait_for(proxy.lost.wait(), WAIT_S)
            await jane.logout()
            sent = await sending  # not UNAUTHENTICATED: the first attempt was delivered
        finally:
            await jane.close()
    assert sent.message_id == pb.SendMessageResponse.FromString(proxy.replies[0]).message_id
    assert [m.body for m in (await bob.read_messages()).messages] == ["before logout"]


async def test_pipelined_calls_resent_after_a_broken_stream_keep_their_order(
    members: list[str], bob: ChatClient
) -> None:
    """Twenty sends in flight on one stream; the stream breaks after the first reply. Each
    re-sent call wakes from its own back-off, yet they go out as first made."""
    proxy = Proxy(members[0], drop="SendMessage")
    policy = RetryPolicy(deadline_s=10.0, first_backoff_s=0.2, jitter=1.0)
    async with serving(proxy) as address:
        jane = await user([address], "jane", policy=policy)
        try:
            await asyncio.gather(*(jane.send_message("bob", f"m{i:02}") for i in range(20)))
        finally:
            await jane.close()
    unread = await bob.read_messages(100)
    assert [m.body for m in unread.messages] == [f"m{i:02}" for i in range(20)]
