"""The chat client library: one object that talks to whichever node leads.

Callers name the members; the library finds the leader (``GetClusterStatus`` on
every member, ``leader-address`` hints on ``UNAVAILABLE``, ``LeaderInfo`` on
the stream), retries with the same ``request_id`` across failovers, and resumes
``Subscribe`` from the last message it handed out. Only ``UNAVAILABLE`` (not
the leader, no leader, connection lost) is retried, with jittered exponential
back-off and only until the call's deadline: every other status becomes a
typed :class:`ChatError` at once, carrying the server's one-line message.
These are :mod:`client.retry`'s rules, which chatctl's calls follow too.

Once logged in, the client sends its session calls (SendMessage, ReadMessages,
MarkRead, DeleteMessages, ListAccounts, History, ListSessions) and its subscription on one
``Session`` stream to the leader (:mod:`client.session_link`), which carries
several times more calls than one unary call each; ``unary=True`` makes every
call a unary one. Logout, DeleteAccount and EndSession stay unary: they (may) end the session a
stream belongs to, and a retry after a lost reply must still reach the first
result, which a new stream on an ended session cannot.

asyncio first; :mod:`client.sync` wraps it for blocking code. Example::

    async with ChatClient(["127.0.0.1:7001", "127.0.0.1:7002"]) as chat:
        await chat.login("alice", "correct horse")
        await chat.send_message("bob", "hi")
        async for message in chat.subscribe():
            print(message.sender, message.body)

Every mutating call (CreateAccount, Login, Logout, SendMessage, ReadMessages,
MarkRead, DeleteMessages, DeleteAccount, EndSession) is stamped with a fresh request id
once, before its first attempt, and every retry of it carries the same id, so
the cluster acts on it once even when a reply is lost in a failover: a retried
``ReadMessages`` returns the batch the lost reply held (less any message
deleted meanwhile), not the next one; a retried ``DeleteMessages`` or
``MarkRead`` returns the first count; a retried ``Logout`` or ``DeleteAccount``
succeeds although the first attempt already ended the session.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar, cast

import grpc
from google.protobuf.message import Message as ProtoMessage

from client.connect import Channels
from client.retry import Budget, RetryPolicy, on_leader
from client.session_link import SendOrder, SessionLink
from client.status import ClusterStatus, Member, cluster_status
from proto import chat_pb2 as pb
from proto import chat_pb2_grpc
from proto.errors import (
    AlreadyExists,
    AuthError,
    ChatError,
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from proto.session_calls import FRAME_FIELDS, SESSION_ENDING

R = TypeVar("R", bound=ProtoMessage)

# -- errors and streamed calls ---------------------------------------------------
#
# The error classes are the shared table's (proto.errors): a status means one class
# on the server that raised it and here, and the client's own verdict (no leader
# answered in time) is an Unavailable too. Callers import them from this library.

__all__ = [
    "STREAMED_CALLS",
    "AccountPage",
    "AlreadyExists",
    "AuthError",
    "ChatClient",
    "ChatError",
    "ClientState",
    "ClusterStatus",
    "Connection",
    "DeadlineExceeded",
    "HistoryPage",
    "Internal",
    "InvalidArgument",
    "LoginReply",
    "Member",
    "Message",
    "NotFound",
    "ResourceExhausted",
    "RetryPolicy",
    "Sent",
    "SessionInfo",
    "StateListener",
    "Unavailable",
    "Unread",
    "with_request_id",
]

STREAMED_CALLS = {
    method: field
    for method, field in FRAME_FIELDS.items()
    if method not in SESSION_ENDING and method != "Subscribe"
}
"""The calls a logged-in client sends on its Session stream, and each one's frame field."""


# -- values -----------------------------------------------------------------------


class Connection(enum.StrEnum):
    """How the client stands with the cluster, as a status bar shows it."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    FAILING_OVER = "failing over"
    NO_LEADER = "no leader"


@dataclass(frozen=True, slots=True)
class ClientState:
    """Connection state plus the leader it concerns (0 / '' while unknown)."""

    connection: Connection = Connection.CONNECTING
    leader_id: int = 0
    address: str = ""
    term: int = 0


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    sender: str
    recipient: str
    body: str
    sent_at_ms: int
    read: bool


@dataclass(frozen=True, slots=True)
class LoginReply:
    """What a login tells: the user, how many are unread, where live delivery starts."""

    username: str
    unread_count: int
    last_message_id: int


@dataclass(frozen=True, slots=True)
class Sent:
    message_id: int
    recipient_online: bool


@dataclass(frozen=True, slots=True)
class Unread:
    """A batch of formerly unread messages, oldest first, and how many remain."""

    messages: tuple[Message, ...]
    remaining: int


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Messages between the caller and one partner, newest first; pass next_before_id as
    before_id for the older page (0: this page reaches the first message)."""

    messages: tuple[Message, ...]
    next_before_id: int


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One of the caller's open sessions; ``current`` is the one the call came on."""

    session_id: str
    created_ms: int
    last_used_ms: int
    client_label: str
    current: bool


@dataclass(frozen=True, slots=True)
class AccountPage:
    usernames: tuple[str, ...]
    next_page_token: str  # '' on the last page


StateListener = Callable[[ClientState], None]


# -- the client -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Stream:
    """One attempt at a subscription on one node: what it delivers, what its watchdog
    cancels, and how to end it when the subscriber stops or the attempt fails."""

    events: AsyncIterator[pb.Message | pb.LeaderInfo]
    watched: grpc.aio.UnaryStreamCall | SessionLink
    close: Callable[[], None]


class ChatClient:
    """Every ChatService call, made on the current leader and retried across failovers.

    One instance holds one session (after :meth:`login`). It is not thread-safe;
    use it from one event loop, or through :class:`client.sync.SyncChatClient`.
    """

    def __init__(
        self,
        members: Sequence[str],
        *,
        credentials: grpc.ChannelCredentials | None = None,
        policy: RetryPolicy | None = None,
        unary: bool = False,
    ) -> None:
        if not members:
            raise ValueError("the member list is empty")
        self._members = list(dict.fromkeys(members))
        self._policy = policy or RetryPolicy()
        self._rng = random.Random()
        self._channels = Channels(credentials)
        self._leader = ""  # address of the node we believe leads; '' while looking
        self._hint = ""  # where the last failure said the leader is
        self._state = ClientState()
        self._listeners: list[StateListener] = []
        self._token = ""
        self.username = ""
        self._unary = unary
        self._link: SessionLink | None = None
        self._links_opened = 0
        self._order = SendOrder()  # streamed calls are (re-)sent in the order they were made

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every channel; calls and streams still open end with an error."""
        self._drop_link()
        await self._channels.close()

    # -- observable state ---------------------------------------------------------

    @property
    def state(self) -> ClientState:
        return self._state

    def add_state_listener(self, listener: StateListener) -> Callable[[], None]:
        """Call listener with each new state (on the client's loop); returns the remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    # -- calls --------------------------------------------------------------------

    async def create_account(self, username: str, password: str) -> None:
        request = pb.CreateAccountRequest(username=username, password=password)
        await self._call("CreateAccount", request, pb.CreateAccountResponse)

    async def login(self, username: str, password: str, client_label: str = "") -> LoginReply:
        """Open a session; later calls carry its token (a failover keeps it valid).
        client_label names it in :meth:`list_sessions` (at most 64 printable characters)."""
        request = pb.LoginRequest(username=username, password=password, client_label=client_label)
        reply = await self._call("Login", request, pb.LoginResponse)
        self._drop_link()  # a stream belongs to the session it was opened with
        self._token, self.username = reply.session_token, username
        return LoginReply(username, reply.unread_count, reply.last_message_id)

    async def logout(self) -> None:
        """End the session everywhere, once; the token is forgotten even if the call fails."""
        try:
            await self._call("Logout", pb.LogoutRequest(), pb.LogoutResponse)
        finally:
            self._forget_session()

    async def list_accounts(
        self, pattern: str = "", page_size: int = 0, page_token: str = ""
    ) -> AccountPage:
        """One page of usernames matching a shell-style pattern ('' for all), sorted."""
        request = pb.ListAccountsRequest(
            pattern=pattern, page_size=page_size, page_token=page_token
        )
        reply = await self._call("ListAccounts", request, pb.ListAccountsResponse)
        return AccountPage(tuple(reply.usernames), reply.next_page_token)

    async def history(self, partner: str, before_id: int = 0, limit: int = 0) -> HistoryPage:
        """One page of the conversation with partner, both directions, read or not, newest
        first: messages with id < before_id (0: the newest), at most limit (0: the
        server's default, 50; at most 1,000). Marks nothing read."""
        request = pb.HistoryRequest(partner=partner, before_id=before_id, limit=limit)
        reply = await self._call("History", request, pb.HistoryResponse)
        return HistoryPage(tuple(_message(m) for m in reply.messages), reply.next_before_id)

    async def list_sessions(self) -> tuple[SessionInfo, ...]:
        """The caller's open sessions, newest first (at most 200)."""
        reply = await self._call("ListSessions", pb.ListSessionsRequest(), pb.ListSessionsResponse)
        return tuple(_session_info(info) for info in reply.sessions)

    async def end_session(self, session_id: str) -> None:
        """End one of the caller's sessions (a lost device's), once: its token stops
        working and its streams end. NOT_FOUND for an id that is not the caller's."""
        request = pb.EndSessionRequest(session_id=session_id)
        await self._call("EndSession", request, pb.EndSessionResponse)

    async def send_message(self, recipient: str, body: str, request_id: str = "") -> Sent:
        """Send once, exactly: retries reuse one request id, so a failover cannot duplicate.

        A caller that outlives the deadline (an outbox) passes its own request_id and
        calls again with it: the cluster answers the repeat from its record."""
        request = pb.SendMessageRequest(recipient=recipient, body=body, request_id=request_id)
        reply = await self._call("SendMessage", request, pb.SendMessageResponse)
        return Sent(reply.message_id, reply.recipient_online)

    async def read_messages(self, limit: int = 0) -> Unread:
        """Up to limit (0: server default) oldest unread messages, now marked read.

        A retry after a lost reply returns that reply's batch, so none is skipped."""
        request = pb.ReadMessagesRequest(limit=limit)
        reply = await self._call("ReadMessages", request, pb.ReadMessagesResponse)
        return Unread(tuple(_message(m) for m in reply.messages), reply.remaining_unread)

    async def mark_read(self, message_ids: Iterable[int]) -> int:
        """Mark shown messages read; returns how many changed (the first attempt's count)."""
        request = pb.MarkReadRequest(message_ids=list(message_ids))
        return (await self._call("MarkRead", request, pb.MarkReadResponse)).marked_count

    async def delete_messages(self, message_ids: Iterable[int]) -> int:
        """Delete the caller's own sent or received messages; returns how many went (the
        first attempt's count, also when a failover made the library retry)."""
        request = pb.DeleteMessagesRequest(message_ids=list(message_ids))
        reply = await self._call("DeleteMessages", request, pb.DeleteMessagesResponse)
        return reply.deleted_count

    async def delete_account(self, password: str) -> None:
        """Remove the logged-in account (password re-checked); the session ends with it.

        A retry after a lost reply succeeds: the cluster knows the request by its id."""
        request = pb.DeleteAccountRequest(password=password)
        await self._call("DeleteAccount", request, pb.DeleteAccountResponse)
        self._forget_session()

    async def cluster_status(self) -> ClusterStatus:
        """The leader's view of the cluster; also a way to find the leader up front."""
        request = pb.GetClusterStatusRequest()
        return cluster_status(await self._call("GetClusterStatus", request, pb.ClusterStatus))

    async def subscribe(self, after_id: int = 0) -> AsyncIterator[Message]:
        """Every message to the caller with id > after_id, in id order, forever.

        A broken stream is reopened on the leader from the last id handed out,
        so nothing is skipped or repeated across a failover. Raises
        :class:`Unavailable` when no leader comes back within the deadline
        (counted from the break), and any other :class:`ChatError` at once.
        A logged-in client subscribes on its Session stream, any other with the
        Subscribe call; both are watched and resumed alike.
        """
        last_id = after_id
        budget = self._new_budget()
        while True:
            address = await self._find(budget)
            if address:
                stream = self._open_stream(address, last_id, budget)
                watchdog = asyncio.create_task(self._watch_stream(address, stream.watched))
                try:
                    async for event in stream.events:
                        budget = self._new_budget()  # the stream is up: a later break starts afresh
                        if isinstance(event, pb.LeaderInfo):
                            self._note_leader(address, event)
                        elif event.id > last_id:
                            last_id = event.id
                            yield _message(event)
                except grpc.aio.AioRpcError as exc:
                    self._lost_leader(address, budget.failed(exc))
                except asyncio.CancelledError:
                    if not _fired(watchdog):
                        raise  # our caller cancelled us
                    self._lost_leader(address)
                finally:
                    watchdog.cancel()
                    stream.close()
            await budget.pause()

    def _open_stream(self, address: str, after_id: int, budget: Budget) -> _Stream:
        """One attempt's stream: on the Session stream when logged in, else Subscribe."""
        if self._unary or not self._token:
            return self._subscribe_unary(address, after_id)
        return self._subscribe_on_link(address, after_id, budget.attempt_timeout())

    def _subscribe_unary(self, address: str, after_id: int) -> _Stream:
        """A Subscribe call to address: its events, each a message or a LeaderInfo."""
        request = pb.SubscribeRequest(after_id=after_id)
        call = self._stub(address).Subscribe(request, metadata=_metadata(self._token))
        events = (getattr(event, event.WhichOneof("event")) async for event in call)
        return _Stream(events, call, call.cancel)

    def _subscribe_on_link(self, address: str, after_id: int, timeout_s: float) -> _Stream:
        """A subscription on the Session stream to address (its link reports LeaderInfo)."""
        link = self._link_to(address)

        def close() -> None:
            if self._link is link and not link.done():
                self._drop_link()  # our caller stopped: no one reads its messages

        return _Stream(link.messages(after_id, timeout_s), link, close)

    async def _watch_stream(
        self, address: str, call: grpc.aio.UnaryStreamCall | SessionLink
    ) -> bool:
        """Cancel a stream whose node stops answering or leading.

        An idle stream on a paused (SIGSTOP) or cut-off leader would wait
        forever: nothing is refused and no deadline covers a stream. So ask the
        node for its status every so often, with a short deadline.
        """
        while not call.done():
            await asyncio.sleep(self._policy.stream_check_s)
            try:
                status = await self._status(address, self._policy.stream_check_s)
            except grpc.aio.AioRpcError:
                status = None
            if status is None or status.role != "leader":
                call.cancel()
                return True
        return False

    # -- retry core ---------------------------------------------------------------

    async def _call(self, method: str, request: ProtoMessage, reply: type[R]) -> R:
        """Run one method on the leader and return its reply; client.retry has the rules.

        The call is the caller's who made it: its request id and its session token
        are fixed before the first attempt, and every retry carries both, whatever
        login or logout happened meanwhile. It goes on the Session stream while its
        session is the client's current one, and as a unary call otherwise.
        """
        request = with_request_id(request)
        budget = self._new_budget()
        token = self._token
        field = STREAMED_CALLS.get(method) if token and not self._unary else None
        unary = self._unary_attempt(method, request, reply, token, budget)
        if field is None:
            return await on_leader(unary, budget, self._find, self._lost_leader)
        ticket = self._order.ticket()

        async def attempt(address: str) -> R:
            if token != self._token:  # the client moved to another session meanwhile:
                await self._order.done(ticket)  # out of the stream's order for good
                return await unary(address)
            link = self._link_to(address)
            await self._order.turn(ticket, link.generation)

            async def written() -> None:
                await self._order.written(ticket, link.generation)

            answer = await link.call(field, request, budget.attempt_timeout(), written)
            return cast(R, answer)

        try:
            return await on_leader(attempt, budget, self._find, self._lost_leader)
        finally:
            await self._order.done(ticket)

    def _unary_attempt(
        self, method: str, request: ProtoMessage, reply: type[R], token: str, budget: Budget
    ) -> Callable[[str], Awaitable[R]]:
        """One try of method as a unary call; its reply is of type reply (the stub's)."""

        async def attempt(address: str) -> R:
            rpc = getattr(self._stub(address), method)
            timeout = budget.attempt_timeout()
            return cast(R, await rpc(request, metadata=_metadata(token), timeout=timeout))

        return attempt

    def _link_to(self, address: str) -> SessionLink:
        """The open Session stream to address, opened now if there is none."""
        link = self._link
        if link is None or link.address != address or link.done():
            self._drop_link()
            self._links_opened += 1
            link = self._link = SessionLink(
                self._stub(address),
                address,
                _metadata(self._token),
                lambda info: self._note_leader(address, info),
                self._links_opened,
            )
        return link

    def _drop_link(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.close()

    def _lost_leader(self, address: str, hint: str = "") -> None:
        """address no longer serves as leader: look again, starting from hint."""
        if self._leader != address:
            return  # another call already moved on from this node
        self._leader, self._hint = "", hint
        self._publish(dataclasses.replace(self._state, connection=Connection.FAILING_OVER))

    def _new_budget(self) -> Budget:
        return Budget.start(self._policy, self._rng, self._gave_up)

    def _gave_up(self) -> None:
        self._publish(dataclasses.replace(self._state, connection=Connection.NO_LEADER))

    # -- finding the leader -------------------------------------------------------

    async def _find(self, budget: Budget) -> str:
        """The leader to try: the one we know, else whoever the members say leads ('')."""
        return self._leader or await self._locate(budget)

    async def _locate(self, budget: Budget) -> str:
        """Ask the members (the last hint first) who leads; the leader's address or ''."""
        found = await self._find_leader(budget)
        if found is None:
            lost = self._state.connection in (Connection.CONNECTED, Connection.FAILING_OVER)
            connection = Connection.FAILING_OVER if lost else Connection.NO_LEADER
            self._publish(dataclasses.replace(self._state, connection=connection))
            return ""
        self._leader, self._hint = found.address, ""
        self._publish(found)
        return found.address

    async def _find_leader(self, budget: Budget) -> ClientState | None:
        """The leader as a state (the last hint asked first), or None; see find_leader."""
        found = await budget.find_leader([self._hint, *self._members], self._status)
        if found is None:
            return None
        address, status = found
        return ClientState(Connection.CONNECTED, status.node_id, address, status.term)

    async def _status(self, address: str, wait_s: float) -> ClusterStatus:
        request = pb.GetClusterStatusRequest()
        return cluster_status(await self._stub(address).GetClusterStatus(request, timeout=wait_s))

    def _note_leader(self, address: str, info: pb.LeaderInfo) -> None:
        """A LeaderInfo event: confirm the node we stream from, or remember where to go next."""
        ours = info.leader_address == address or info.leader_id == self._state.leader_id
        if info.leader_id and ours:
            self._publish(ClientState(Connection.CONNECTED, info.leader_id, address, info.term))
        else:
            self._hint = info.leader_address  # the node will end this stream; go there next

    # -- plumbing -----------------------------------------------------------------

    def _publish(self, state: ClientState) -> None:
        if state == self._state:
            return
        self._state = state
        for listener in list(self._listeners):
            listener(state)

    def _stub(self, address: str) -> chat_pb2_grpc.ChatServiceStub:
        return chat_pb2_grpc.ChatServiceStub(self._channels.get(address))

    def _forget_session(self) -> None:
        self._drop_link()
        self._token = self.username = ""


def _metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def with_request_id(request: ProtoMessage) -> ProtoMessage:
    """A copy carrying a fresh request id if the method takes one and the caller set none.

    Every mutating method's request has a ``request_id`` field (docs/api.md, "Client API"),
    so this stamps them all. Made once per call, before the first attempt, so
    every retry of the call carries the same id and the cluster applies it once.
    """
    if "request_id" not in request.DESCRIPTOR.fields_by_name or request.request_id:
        return request
    stamped = type(request)()
    stamped.CopyFrom(request)
    stamped.request_id = uuid.uuid4().hex
    return stamped


def _message(message: pb.Message) -> Message:
    return Message(
        id=message.id,
        sender=message.sender,
        recipient=message.recipient,
        body=message.body,
        sent_at_ms=message.sent_at_unix_ms,
        read=message.read,
    )


def _session_info(info: pb.SessionInfo) -> SessionInfo:
    return SessionInfo(
        session_id=info.session_id,
        created_ms=info.created_unix_ms,
        last_used_ms=info.last_used_unix_ms,
        client_label=info.client_label,
        current=info.current,
    )


def _fired(watchdog: asyncio.Task[bool]) -> bool:
    """Whether a stream watchdog ended the stream (rather than being stopped itself)."""
    return watchdog.done() and not watchdog.cancelled() and watchdog.result()
