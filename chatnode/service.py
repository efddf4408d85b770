"""The client API (``chat.v1.ChatService``) on top of the coordinator and the chat state.

Handlers validate input, decide what is not deterministic (time, hashes, tokens,
presence) and propose an op; the reply comes from applying the committed entry.
Reads are served by the leader only, after the state has applied everything
the leader committed, so a client never reads older data than it wrote.
Handlers raise the errors of :mod:`proto.errors`; :mod:`chatnode.rpc` maps those
to status codes.

Password checks and hashes run in a bounded :class:`chatnode.passwords.HashPool`:
beyond its bound a Login, CreateAccount or DeleteAccount gets RESOURCE_EXHAUSTED
at once, so a flood of them neither queues without limit nor slows the event
loop that carries heartbeats.

Time is the cluster clock's (:mod:`chatnode.cluster_clock`): every op carries the
cluster time the leader stamped, the wall clock within bounds that keep it from
going backwards or running faster than real time across leaders.

Sessions expire after the TTL without use, with sliding renewal. Recording
every use would turn every read into a log write, so a session row holds a
deadline instead, and a use renews it only when the deadline has come within
one TTL of now: the renewal sets it to now + TTL + TTL/100, so a session
renews at most once per hundredth of the TTL (7.2 hours at 30 days), is valid
for at least the TTL after its last use and at most 1% longer. A mutating call
carries the renewal in its own op (it goes through the log anyway); a
read-only call (ListAccounts, History, ListSessions, Subscribe) proposes a small
Touch op only when a renewal is due. The leader decides deadlines with the
cluster clock and its TTL and they travel in the ops, so nodes whose
``--session-ttl`` or clocks differ still agree on every session.

Each account's proposals draw on a token bucket (:mod:`chatnode.admission`): one
user's flood gets RESOURCE_EXHAUSTED rather than the log.

Every mutating call honours its request_id (docs/api.md, "Exactly once"):
a retry is proposed like any call and, when it applies, finds the reply
stored for the first attempt and returns it, changing nothing (also when the
two ran at once). Replies are keyed by user, request_id and kind of call, and
a retry whose first attempt ended its session (Logout, DeleteAccount) is
answered here from the reply found by the session's token (see
:mod:`chatnode.state`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc

from chatnode import ops, passwords, validation
from chatnode.admission import ProposalBudget
from chatnode.applier import Applier
from chatnode.cluster_clock import ClusterClock
from chatnode.live import Closed, LiveHub, Overflowed, Subscriber
from chatnode.ops import StoredMessage
from chatnode.pending import Pending, answered
from chatnode.session_cache import SessionCache
from chatnode.session_stream import Envelope, SessionStream, StartCall
from chatnode.state import NO_SESSION, WRONG_CREDENTIALS, ChatReader, Session, SessionListing
from coord.boundary import Coordinator, LeaderView, NotLeader, Status
from proto import chat_pb2 as pb
from proto import limits, release
from proto.addresses import client_address
from proto.errors import (
    AlreadyExists,
    AuthError,
    ChatError,
    InvalidArgument,
    Unavailable,
)

T = TypeVar("T")
R = TypeVar("R")

REPLAY_PAGE = 256
DEFAULT_SESSION_TTL_MS = 30 * 24 * 60 * 60 * 1000
RENEW_STEPS_PER_TTL = 100
"""A session is renewed at most this many times per TTL; it may outlive the TTL by one step."""


def system_clock_ms() -> int:
    """This machine's wall clock, in Unix milliseconds: what a leader stamps ops with, within
    the cluster clock's bounds (chatnode.cluster_clock)."""
    return time.time_ns() // 1_000_000


def monotonic_ms() -> int:
    """This machine's monotonic clock: the only clock whose durations are trusted."""
    return time.monotonic_ns() // 1_000_000


# A real hash of a password nobody knows, at the current parameters: a Login for
# an unknown name costs as much as one for a known name.
_DECOY_HASH = passwords.hash_password(secrets.token_urlsafe()).encoded


class ReadPool:
    """Where read queries run.

    Point lookups by key (sessions, accounts, stored results) run on the event
    loop over one connection: they touch a handful of cached pages, far less
    than the ~0.1 ms a hop to a thread costs. Queries that return many rows
    (listings, Subscribe replays) run in worker threads, one connection each.
    """

    def __init__(self, path: Path, workers: int = 2) -> None:
        self._path = path
        self._local = threading.local()
        self._readers: list[ChatReader] = []
        self.lookup = self._open()
        self.sessions = SessionCache(self.lookup.session)
        self._io = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="read")

    async def run(self, query: Callable[[ChatReader], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._io, lambda: query(self._thread_reader()))

    def close(self) -> None:
        self._io.shutdown(wait=True)
        for reader in self._readers:
            reader.close()

    def _thread_reader(self) -> ChatReader:
        reader = getattr(self._local, "reader", None)
        if reader is None:
            reader = self._local.reader = self._open()
        return reader

    def _open(self) -> ChatReader:
        reader = ChatReader(self._path)
        self._readers.append(reader)
        return reader


@dataclass(frozen=True, slots=True)
class _Caller:
    """An authenticated call: its session, its request_id (checked), and the leader's time
    and renewal for it."""

    session: Session
    token_hash: str
    now_ms: int
    renewal_ms: int  # the session's new deadline if this use renews it, else 0
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class _Unary:
    """A unary call's Envelope (chatnode.session_stream): its metadata and its request's
    request_id, read and checked when the call first asks for them."""

    context: Any
    raw_request_id: str = ""

    def token_hash(self) -> str:
        return _token_hash(self.context)

    def request_id(self) -> str:
        return validation.request_id(self.raw_request_id)


def _unary(
    start: Callable[[ChatService, Any, Envelope], Awaitable[Pending]],
) -> Callable[..., Any]:
    """The unary handler of a two-step session call: start it, then finish it."""

    async def handle(self: ChatService, request: Any, context: Any) -> Any:
        envelope = _Unary(context, getattr(request, "request_id", ""))
        return await (await start(self, request, envelope))

    handle.__doc__ = start.__doc__
    return handle


class ChatService:
    """Implements every RPC of docs/api.md, "Client API"."""

    def __init__(
        self,
        coordinator: Coordinator,
        applier: Applier,
        reads: ReadPool,
        hub: LiveHub,
        clock: ClusterClock,
        session_ttl_ms: int = DEFAULT_SESSION_TTL_MS,
        wall_clock_ms: Callable[[], int] = system_clock_ms,
        monotonic_clock_ms: Callable[[], int] = monotonic_ms,
        budget: ProposalBudget | None = None,
    ) -> None:
        self._coord = coordinator
        self._applier = applier
        self._reads = reads
        self._hub = hub
        self._session_ttl_ms = session_ttl_ms
        self._clock = clock
        self._wall_ms = wall_clock_ms
        self._mono_ms = monotonic_clock_ms
        self._budget = budget or ProposalBudget()
        self._hashes = passwords.HashPool()
        self._leader_views = 0  # how many the coordinator published (_count_leader_views)
        self._writable_in: int | None = None  # the view a write last passed the barrier in
        self._following: asyncio.Task[None] | None = None
        self.stream_calls: dict[str, StartCall] = {
            "logout": self.start_logout,
            "list_accounts": self.start_list_accounts,
            "history": self.start_history,
            "list_sessions": self.start_list_sessions,
            "end_session": self.start_end_session,
            "delete_account": self.start_delete_account,
            "send_message": self.start_send_message,
            "read_messages": self.start_read_messages,
            "mark_read": self.start_mark_read,
            "delete_messages": self.start_delete_messages,
        }
        """How a Session stream starts each call, by its frame field (subscribe is the
        stream's own): the unary handler's first step (see :mod:`chatnode.pending`)."""

    @property
    def hash_pool(self) -> passwords.HashPool:
        """Where password hashes and checks run; full, it sheds Login, CreateAccount and
        DeleteAccount with RESOURCE_EXHAUSTED (its ``admitted`` count says how full)."""
        return self._hashes

    def close(self) -> None:
        """Release the hashing threads and stop counting leader views (after the server
        stopped calling in)."""
        self._hashes.close()
        if self._following is not None:
            self._following.cancel()

    # -- accounts -------------------------------------------------------------

    async def CreateAccount(
        self, request: pb.CreateAccountRequest, context
    ) -> pb.CreateAccountResponse:
        username = validation.username(request.username)
        password = validation.password(request.password)
        request_id = validation.request_id(request.request_id)
        await self._leader_ready()
        if await self._replayed(username, request_id, ops.CreateAccount.kind) is None:
            if self._reads.lookup.account(username) is not None:
                raise AlreadyExists(f"username {username!r} is taken")
            hashed = await self._hashes.run(passwords.hash_password, password)
            await self._commit(
                ops.CreateAccount(username, hashed.encoded, request_id, self._now_ms())
            )
        return pb.CreateAccountResponse()

    async def Login(self, request: pb.LoginRequest, context) -> pb.LoginResponse:
        username = validation.username(request.username)
        password = validation.password(request.password)
        request_id = validation.request_id(request.request_id)
        label = validation.client_label(request.client_label)
        await self._leader_ready()
        account = self._reads.lookup.account(username)
        stored = (
            self._reads.lookup.stored_result(username, request_id, ops.Login.kind)
            if request_id
            else None
        )
        # What the password is checked against: for a retry, the hash whose key sealed
        # the first attempt's token (an upgrade may have replaced the account's since);
        # else the account's; for an unknown name a decoy, which costs the same.
        first = stored.value if stored is not None else None
        checked = (first.seal_hash if isinstance(first, ops.LoggedIn) else "") or (
            account.password_hash if account else _DECOY_HASH
        )
        verified = await self._hashes.run(passwords.verify_password, password, checked)
        if verified is None:
            raise AuthError(WRONG_CREDENTIALS)
        key = passwords.Hashed(checked, verified.seal_key)
        if stored is not None:
            result, token = _checked(stored), ""
        elif account is not None:
            result, token = await self._open_session(
                account.id, username, password, request_id, key, label
            )
        else:
            raise AuthError(WRONG_CREDENTIALS)
        login = result.reply(ops.LoggedIn)
        if not token:
            token = await self._unsealed(login, password, request_id, key)
        return pb.LoginResponse(
            session_token=token,
            unread_count=login.unread_count,
            last_message_id=login.last_message_id,
        )

    async def _open_session(
        self,
        account_id: int,
        username: str,
        password: str,
        request_id: str,
        key: passwords.Hashed,
        label: str,
    ) -> tuple[ops.Result, str]:
        """Propose the Login; its result, and our token ("" when a concurrent attempt
        with the same request_id committed first and its token is the answer).

        A hash with outdated parameters is replaced now, while the password is at
        hand: the new hash travels in the op, so every replica stores the same one,
        and the token is sealed under the new hash's key, which the result names."""
        if passwords.needs_rehash(key.encoded):
            key = await self._hashes.run(passwords.hash_password, password)
        token = passwords.new_session_token()
        sealed = passwords.seal_token(key.seal_key, request_id, token) if request_id else ""
        now = self._now_ms()
        op = ops.Login(
            username,
            account_id,
            passwords.token_hash(token),
            sealed,
            request_id,
            now,
            key.encoded,
            self._deadline(now),
            label,
        )
        result = await self._commit(op)
        return result, token if result.reply(ops.LoggedIn).sealed_token == sealed else ""

    async def _unsealed(
        self, login: ops.LoggedIn, password: str, request_id: str, key: passwords.Hashed
    ) -> str:
        """The token sealed in a Login reply, with the key of the hash it names (replies
        from before upgrades name none: the hash the password was just checked against)."""
        seal_hash = login.seal_hash or key.encoded
        seal_key = key.seal_key
        if seal_hash != key.encoded:  # a concurrent first attempt upgraded with another salt
            verified = await self._hashes.run(passwords.verify_password, password, seal_hash)
            if verified is None:
                raise AuthError(WRONG_CREDENTIALS)
            seal_key = verified.seal_key
        try:
            return passwords.unseal_token(seal_key, request_id, login.sealed_token)
        except UnicodeDecodeError:  # sealed by an older release under a since-replaced hash
            raise AuthError(
                "this login attempt can no longer be replayed; log in with a new request_id"
            ) from None

    # -- session calls, in two steps --------------------------------------------
    #
    # Each call on a session starts (validates, authenticates, proposes its op) and
    # returns what finishes it (the wait for the op to apply, and the reply). A
    # unary handler does both at once; a Session stream starts its calls one after
    # the other, in the order they came, and finishes them in that order while
    # later ones start (chatnode.session_stream), so it pipelines without
    # reordering anything.

    async def start_logout(self, request: pb.LogoutRequest, envelope: Envelope) -> Pending:
        async def logout(caller: _Caller) -> ops.Op:
            return ops.Logout(caller.token_hash, caller.now_ms, caller.request_id)

        pending = await self._propose_once(envelope, ops.Logout.kind, logout)
        return _reply(pending, _logged_out)

    async def start_list_accounts(
        self, request: pb.ListAccountsRequest, envelope: Envelope
    ) -> Pending:
        touched = self._touch(await self.authenticate(envelope))
        pattern = validation.pattern(request.pattern) or "*"
        size = validation.clamp(request.page_size, limits.PAGE_SIZE_DEFAULT, limits.PAGE_SIZE_MAX)
        after = _decode_page_token(request.page_token)

        async def listed() -> pb.ListAccountsResponse:
            await touched
            page = await self._reads.run(lambda r: r.list_accounts(pattern, after, size))
            token = _encode_page_token(page.resume_after) if page.resume_after else ""
            return pb.ListAccountsResponse(usernames=page.names, next_page_token=token)

        return listed()

    async def start_history(self, request: pb.HistoryRequest, envelope: Envelope) -> Pending:
        """A read like ListAccounts: no log entry (but a due renewal), served after the
        barrier, and on a stream only once the calls before it applied."""
        caller = await self.authenticate(envelope)
        touched = self._touch(caller)
        partner = validation.username(request.partner, "partner")
        before_id = validation.message_id(request.before_id, "before_id")
        limit = validation.clamp(
            request.limit, limits.HISTORY_LIMIT_DEFAULT, limits.HISTORY_LIMIT_MAX
        )
        me = caller.session

        async def history() -> pb.HistoryResponse:
            await touched
            page = await self._reads.run(
                lambda r: r.history(
                    me.account_id,
                    me.username,
                    partner,
                    before_id,
                    limit,
                    limits.READ_REPLY_MAX_BYTES,
                )
            )
            return pb.HistoryResponse(
                messages=[_message_pb(m) for m in page.messages],
                next_before_id=page.next_before_id,
            )

        return history()

    async def start_list_sessions(
        self, request: pb.ListSessionsRequest, envelope: Envelope
    ) -> Pending:
        caller = await self.authenticate(envelope)
        touched = self._touch(caller)

        async def listed() -> pb.ListSessionsResponse:
            await touched
            account_id, now = caller.session.account_id, caller.now_ms
            rows = await self._reads.run(lambda r: r.sessions_of(account_id, now))
            return pb.ListSessionsResponse(
                sessions=[_session_pb(row, caller.token_hash) for row in rows]
            )

        return listed()

    async def start_end_session(self, request: pb.EndSessionRequest, envelope: Envelope) -> Pending:
        async def end_session(caller: _Caller) -> ops.Op:
            """The id is resolved here, on the leader; an id that names none of the
            caller's sessions still goes to the log (as ''): the state answers a retry of
            a request that ended it with the first reply, and anything else NOT_FOUND."""
            session_id = validation.session_id(request.session_id)
            account_id = caller.session.account_id
            ended = self._reads.lookup.session_with_id(account_id, session_id, caller.now_ms)
            return ops.EndSession(
                caller.token_hash, ended, caller.now_ms, caller.request_id, caller.renewal_ms
            )

        pending = await self._propose_once(envelope, ops.EndSession.kind, end_session)
        return _reply(pending, _session_ended)

    async def start_delete_account(
        self, request: pb.DeleteAccountRequest, envelope: Envelope
    ) -> Pending:
        async def delete_account(caller: _Caller) -> ops.Op:
            """The password is re-checked on a first attempt only: a retry whose first
            attempt succeeded finds no account to check it against."""
            password = validation.password(request.password)
            account = self._reads.lookup.account(caller.session.username)
            if account is None or account.id != caller.session.account_id:
                raise AuthError("this session's account no longer exists")
            if (
                await self._hashes.run(passwords.verify_password, password, account.password_hash)
                is None
            ):
                raise AuthError("wrong password")
            return ops.DeleteAccount(
                caller.token_hash, account.id, caller.now_ms, caller.request_id
            )

        pending = await self._propose_once(envelope, ops.DeleteAccount.kind, delete_account)
        return _reply(pending, _account_deleted)

    async def start_send_message(
        self, request: pb.SendMessageRequest, envelope: Envelope
    ) -> Pending:
        async def send(caller: _Caller) -> ops.Op:
            recipient = validation.username(request.recipient, "recipient")
            return ops.SendMessage(
                caller.token_hash,
                recipient,
                validation.body(request.body),
                caller.request_id,
                caller.now_ms,
                self._hub.is_online(recipient),
                caller.renewal_ms,
            )

        pending = await self._propose_once(envelope, ops.SendMessage.kind, send)
        return _reply(pending, _sent)

    async def start_read_messages(
        self, request: pb.ReadMessagesRequest, envelope: Envelope
    ) -> Pending:
        async def read(caller: _Caller) -> ops.Op:
            limit = validation.clamp(
                request.limit, limits.READ_LIMIT_DEFAULT, limits.READ_LIMIT_MAX
            )
            return ops.ReadMessages(
                caller.token_hash,
                limit,
                limits.READ_REPLY_MAX_BYTES,
                caller.now_ms,
                caller.renewal_ms,
                caller.request_id,
            )

        pending = await self._propose_once(envelope, ops.ReadMessages.kind, read)
        return self._read_reply(pending)

    async def _read_reply(self, pending: Awaitable[ops.Result]) -> pb.ReadMessagesResponse:
        """A ReadMessages reply; a retry's result names the first batch by id, and its
        messages are read again here, in a reader thread, not by every replica."""
        match _checked(await pending).value:
            case ops.ReadAgain(reader, ops.ReadIds(ids, remaining)):
                messages = await self._reads.run(lambda r: r.messages_by_id(reader, ids))
            case ops.MessagesRead(messages, remaining):
                pass
            case other:
                raise TypeError(f"not a ReadMessages reply: {other!r}")
        return pb.ReadMessagesResponse(
            messages=[_message_pb(m) for m in messages], remaining_unread=remaining
        )

    async def start_mark_read(self, request: pb.MarkReadRequest, envelope: Envelope) -> Pending:
        pending = await self._on_messages(envelope, ops.MarkRead, request)
        return _reply(pending, _marked)

    async def start_delete_messages(
        self, request: pb.DeleteMessagesRequest, envelope: Envelope
    ) -> Pending:
        pending = await self._on_messages(envelope, ops.DeleteMessages, request)
        return _reply(pending, _messages_deleted)

    Logout = _unary(start_logout)
    ListAccounts = _unary(start_list_accounts)
    DeleteAccount = _unary(start_delete_account)
    SendMessage = _unary(start_send_message)
    ReadMessages = _unary(start_read_messages)
    MarkRead = _unary(start_mark_read)
    DeleteMessages = _unary(start_delete_messages)
    History = _unary(start_history)
    ListSessions = _unary(start_list_sessions)
    EndSession = _unary(start_end_session)

    async def _on_messages(
        self,
        envelope: Envelope,
        op_type: type[ops.MarkRead] | type[ops.DeleteMessages],
        request: pb.MarkReadRequest | pb.DeleteMessagesRequest,
    ) -> Awaitable[ops.Result]:
        """MarkRead and DeleteMessages: an op over some of the caller's message ids."""

        async def make(caller: _Caller) -> ops.Op:
            ids = validation.message_ids(list(request.message_ids))
            return op_type(
                caller.token_hash, ids, caller.now_ms, caller.renewal_ms, caller.request_id
            )

        return await self._propose_once(envelope, op_type.kind, make)

    async def Subscribe(
        self, request: pb.SubscribeRequest, context
    ) -> AsyncIterator[pb.SubscribeEvent]:
        caller = await self.authenticate(_Unary(context))
        # Registered before anything awaits: a Logout or DeleteAccount that applies from
        # here on finds the stream and ends it (authenticate saw the session live).
        subscriber = self._hub.subscribe(
            caller.session.account_id, caller.session.username, caller.token_hash
        )
        try:
            await self._touch(caller)
            yield _leader_event(self._current_leader())
            async for event in self.live_events(subscriber, request.after_id):
                yield event
        finally:
            self._hub.unsubscribe(subscriber)

    async def live_events(
        self, subscriber: Subscriber, after_id: int
    ) -> AsyncIterator[pb.SubscribeEvent]:
        """A subscriber's messages with id > after_id (stored, then live) and leader changes;
        raises Unavailable when this node stops leading, AuthError when the session
        ends."""
        username = subscriber.username
        last_id = after_id
        async for message in self._stored_after(username, last_id):
            last_id = message.id
            yield pb.SubscribeEvent(message=_message_pb(message))
        while True:
            event = await subscriber.get()
            match event:
                case StoredMessage() if event.id > last_id:
                    last_id = event.id
                    yield pb.SubscribeEvent(message=_message_pb(event))
                case Overflowed():
                    async for message in self._stored_after(username, last_id):
                        last_id = message.id
                        yield pb.SubscribeEvent(message=_message_pb(message))
                case Closed(reason=reason, unavailable=True):
                    raise Unavailable(reason)
                case Closed(reason=reason):
                    raise AuthError(reason)
                case LeaderView() | None:
                    yield _leader_event(event)
                    if event is None or event.leader_id != self._coord.status().node_id:
                        raise Unavailable("leadership moved", event.leader_address if event else "")

    async def Session(
        self, requests: AsyncIterator[object], context
    ) -> AsyncIterator[pb.ServerFrame]:
        """One stream for a logged-in client's calls (see chatnode.session_stream)."""
        caller = await self.authenticate(_Unary(context))
        owner = (caller.session.account_id, caller.session.username)
        with self._hub.session_stream(caller.session.account_id) as closing:
            stream = SessionStream(self, caller.token_hash, owner, closing)
            first = pb.ServerFrame(leader=_leader_event(self._current_leader()).leader)
            async for frame in stream.frames(requests, first):
                yield frame

    @property
    def hub(self) -> LiveHub:
        return self._hub

    # -- cluster --------------------------------------------------------------

    async def GetClusterStatus(
        self, request: pb.GetClusterStatusRequest, context
    ) -> pb.ClusterStatus:
        return cluster_status_pb(self._coord.status(), self._applier.applied_index)

    # -- plumbing -------------------------------------------------------------

    async def _leader_ready(self) -> None:
        """Serve only as leader, and only once the state shows all it committed."""
        try:
            index = await self._coord.read_barrier()
        except NotLeader as exc:
            raise Unavailable(str(exc), exc.leader_address) from exc
        await self._applier.wait_applied(index)

    async def _writable(self) -> None:
        """Decide a write only as a leader whose state shows everything committed before its
        leadership: the first write after each leader view the coordinator publishes
        passes the read barrier, the others of that view skip it (docs/design.md,
        "Serving rules", argues why that is enough; proposing refuses a non-leader)."""
        views = self._leader_views
        if self._writable_in == views:
            return
        if self._following is None:
            self._following = asyncio.create_task(self._count_leader_views(), name="views")
        await self._leader_ready()
        if self._leader_views == views:  # no view came while the barrier waited
            self._writable_in = views

    async def _count_leader_views(self) -> None:
        """Count the leader views the coordinator publishes, the first (the view at once)
        included: each ends the leadership a barrier was passed in, as far as writes know."""
        async for _ in self._coord.leader_changes():
            self._leader_views += 1

    async def authenticate(self, envelope: Envelope) -> _Caller:
        """Authenticate the caller by its bearer token, judging expiry by this leader's clock
        (the op it proposes carries that time, so every replica judges the same)."""
        await self._leader_ready()
        token_hash = envelope.token_hash()
        session = self._reads.sessions.get(token_hash)
        now = self._now_ms()
        if session is None or session.expired(now):
            raise AuthError(NO_SESSION)
        return self._caller(session, token_hash, now)

    async def _propose_once(
        self,
        envelope: Envelope,
        kind: str,
        make_op: Callable[[_Caller], Awaitable[ops.Op]],
    ) -> Awaitable[ops.Result]:
        """A mutating call on a session, exactly once: what proposing make_op(caller) gives
        (the op's result, an error one included), which the state answers with the stored
        reply of an earlier attempt with this request_id when there is one
        (chatnode.state checks every op's request_id as it applies it, which also covers
        two attempts at once).

        Without a live session the stored reply is looked for here, before
        authenticating fails: the first attempt may have ended the session (Logout,
        DeleteAccount), and its retry must get that first reply, not
        UNAUTHENTICATED. With one, looking here too would cost every call an SQLite
        query on the event loop (4 % of a loaded leader) to spare the rare retry a
        log entry. make_op validates the rest of the request.
        """
        await self._writable()
        token_hash = envelope.token_hash()
        request_id = envelope.request_id()
        session = self._reads.sessions.get(token_hash)
        now = self._now_ms()
        if session is None or session.expired(now):
            stored = (
                self._reads.lookup.session_result(token_hash, request_id, kind)
                if request_id
                else None
            )
            if stored is None:
                raise AuthError(NO_SESSION)
            return answered(stored)
        self._budget.admit(session.account_id)
        return self._propose(await make_op(self._caller(session, token_hash, now, request_id)))

    def _now_ms(self) -> int:
        """The cluster time for a decision made now (chatnode.cluster_clock)."""
        return self._clock.stamp(self._wall_ms(), self._mono_ms(), self._coord.wall_clock_agreed)

    def _caller(
        self, session: Session, token_hash: str, now_ms: int, request_id: str = ""
    ) -> _Caller:
        """The caller of a live session, with its renewal if one is due."""
        due = session.expires_ms < now_ms + self._session_ttl_ms
        renewal = self._deadline(now_ms) if due else 0
        return _Caller(session, token_hash, now_ms, renewal, request_id)

    def _deadline(self, now_ms: int) -> int:
        """When a session opened or renewed at now_ms expires if unused."""
        return now_ms + self._session_ttl_ms + self._session_ttl_ms // RENEW_STEPS_PER_TTL

    def _touch(self, caller: _Caller) -> Awaitable[object]:
        """Renew the session of a read-only call, when due, through the log."""
        if caller.renewal_ms:
            touch = ops.Touch(caller.token_hash, caller.now_ms, caller.renewal_ms)
            return _settled(self._propose(touch))
        return answered(None)

    async def _replayed(self, username: str, request_id: str, kind: str) -> ops.Result | None:
        """The stored reply of an earlier request with this id, raised if it was an error."""
        if not request_id:
            return None
        result = self._reads.lookup.stored_result(username, request_id, kind)
        return _checked(result) if result is not None else None

    async def _commit(self, op: ops.Op) -> ops.Result:
        return _checked(await self._propose(op))

    def _propose(self, op: ops.Op) -> Awaitable[ops.Result]:
        """Propose op now; what it returns waits for the op's result, an error one included
        (the caller raises it, as _checked does)."""
        try:
            return self._applier.submit(op)
        except NotLeader as exc:
            raise Unavailable(str(exc), exc.leader_address) from exc

    async def _stored_after(self, username: str, after_id: int) -> AsyncIterator[StoredMessage]:
        while True:
            page = await self._reads.run(
                functools.partial(_messages_after, username=username, after_id=after_id)
            )
            for message in page:
                yield message
            if len(page) < REPLAY_PAGE:
                return
            after_id = page[-1].id

    def _current_leader(self) -> LeaderView | None:
        status = self._coord.status()
        if not status.leader_id:
            return None
        return LeaderView(status.leader_id, status.leader_address, status.term)


def _messages_after(reader: ChatReader, username: str, after_id: int) -> list[StoredMessage]:
    return reader.messages_after(username, after_id, REPLAY_PAGE)


async def _reply(pending: Awaitable[ops.Result], build: Callable[[ops.Result], R]) -> R:
    """The reply build makes of the result pending gives, or the result's error, raised."""
    return build(_checked(await pending))


def _logged_out(_: ops.Result) -> pb.LogoutResponse:
    return pb.LogoutResponse()


def _account_deleted(_: ops.Result) -> pb.DeleteAccountResponse:
    return pb.DeleteAccountResponse()


def _session_ended(_: ops.Result) -> pb.EndSessionResponse:
    return pb.EndSessionResponse()


def _session_pb(row: SessionListing, current_token_hash: str) -> pb.SessionInfo:
    return pb.SessionInfo(
        session_id=row.session_id,
        created_unix_ms=row.created_ms,
        last_used_unix_ms=row.used_ms,
        client_label=row.client_label,
        current=row.token_hash == current_token_hash,
    )


def _sent(result: ops.Result) -> pb.SendMessageResponse:
    sent = result.reply(ops.Sent)
    return pb.SendMessageResponse(
        message_id=sent.message_id, recipient_online=sent.recipient_online
    )


def _marked(result: ops.Result) -> pb.MarkReadResponse:
    return pb.MarkReadResponse(marked_count=result.reply(ops.Marked).marked_count)


def _messages_deleted(result: ops.Result) -> pb.DeleteMessagesResponse:
    return pb.DeleteMessagesResponse(deleted_count=result.reply(ops.MessagesDeleted).deleted_count)


async def _settled(pending: Awaitable[ops.Result]) -> ops.Result:
    return _checked(await pending)


def _checked(result: ops.Result) -> ops.Result:
    if not result.ok:
        # The code as the state recorded it, on the base class: a refusal the log
        # decided is answered as the call's own error (a Session stream's CallError
        # frame), never taken for a reason to end the stream.
        raise ChatError(result.message, grpc.StatusCode[result.code])
    return result


def _token_hash(context) -> str:
    """The hash of the caller's bearer token (what sessions are stored under)."""
    header = dict(context.invocation_metadata()).get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("missing 'authorization: Bearer <token>' metadata; log in first")
    return passwords.token_hash(token.strip())


def _message_pb(message: StoredMessage) -> pb.Message:
    return pb.Message(
        id=message.id,
        sender=message.sender,
        recipient=message.recipient,
        body=message.body,
        sent_at_unix_ms=message.sent_at_ms,
        read=message.read,
    )


def cluster_status_pb(status: Status, applied_index: int) -> pb.ClusterStatus:
    """The coordinator's status, and how far this node's state applied it, on the wire: the
    one place their fields meet protobuf's."""
    return pb.ClusterStatus(
        node_id=status.node_id,
        role=status.role,
        term=status.term,
        leader_id=status.leader_id,
        leader_address=client_address(status.leader_address),
        commit_index=status.commit_index,
        members=[
            pb.Member(
                id=m.id,
                address=m.address,
                role=m.role,
                in_sync=m.in_sync,
                match_index=m.match_index,
                reachable=m.reachable,
                clock_offset_ms=m.clock_offset_ms,
            )
            for m in status.members
        ],
        config_epoch=status.config_epoch,
        min_insync=status.min_insync,
        mode=status.mode,
        fault=status.fault,
        version=release.version(),
        applied_index=applied_index,
    )


def _leader_event(view: LeaderView | None) -> pb.SubscribeEvent:
    if view is None:
        return pb.SubscribeEvent(leader=pb.LeaderInfo())
    return pb.SubscribeEvent(
        leader=pb.LeaderInfo(
            leader_id=view.leader_id,
            leader_address=client_address(view.leader_address),
            term=view.term,
        )
    )


def _encode_page_token(last_username: str) -> str:
    return base64.urlsafe_b64encode(last_username.encode()).decode()


def _decode_page_token(token: str) -> str:
    if not token:
        return ""
    try:
        return validation.username(base64.urlsafe_b64decode(token.encode()).decode(), "page_token")
    except (binascii.Error, UnicodeDecodeError, ValueError, InvalidArgument) as exc:
        raise InvalidArgument("page_token is not one this server issued") from exc
