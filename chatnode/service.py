"""The client API (``chat.v1.ChatService``) on top of the coordinator and the chat state.

Handlers validate input, decide what is not deterministic (time, hashes, tokens,
presence) and propose an op; the reply comes from applying the committed entry.
Reads are served by the leader only, after the state has applied everything
the leader committed, so a client never reads older data than it wrote.
Handlers raise :class:`chatnode.errors.ChatError`; :mod:`chatnode.rpc` maps those
to status codes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import grpc

from chatnode import ops, passwords, validation
from chatnode.applier import Applier
from chatnode.errors import ChatError, InvalidArgument, Unauthenticated, Unavailable
from chatnode.live import Closed, LiveHub, Overflowed
from chatnode.state import WRONG_CREDENTIALS, ChatReader, Session, StoredMessage
from coord.boundary import Coordinator, LeaderView, NotLeader
from proto import chat_pb2 as pb

T = TypeVar("T")

READ_REPLY_MAX_BYTES = 3 << 20  # stay under the client's default 4 MiB receive limit
REPLAY_PAGE = 256
# A real hash of a throwaway password: unknown users cost as much as known ones.
_DECOY_HASH = passwords.hash_password("decoy-password")


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


class ChatService:
    """Implements every RPC of API.md section 1."""

    def __init__(
        self,
        coordinator: Coordinator,
        applier: Applier,
        reads: ReadPool,
        hub: LiveHub,
        wall_clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self._coord = coordinator
        self._applier = applier
        self._reads = reads
        self._hub = hub
        self._now_ms = wall_clock_ms

    # -- accounts -------------------------------------------------------------

    async def CreateAccount(
        self, request: pb.CreateAccountRequest, context
    ) -> pb.CreateAccountResponse:
        username = validation.username(request.username)
        password = validation.password(request.password)
        request_id = validation.request_id(request.request_id)
        await self._leader_ready()
        if await self._replayed(username, request_id) is None:
            if self._reads.lookup.account(username) is not None:
                raise ChatError(f"username {username!r} is taken", grpc.StatusCode.ALREADY_EXISTS)
            password_hash = await asyncio.to_thread(passwords.hash_password, password)
            await self._commit(
                ops.CreateAccount(username, password_hash, request_id, self._now_ms())
            )
        return pb.CreateAccountResponse()

    async def Login(self, request: pb.LoginRequest, context) -> pb.LoginResponse:
        username = validation.username(request.username)
        password = validation.password(request.password)
        request_id = validation.request_id(request.request_id)
        await self._leader_ready()
        account = self._reads.lookup.account(username)
        encoded = account.password_hash if account else _DECOY_HASH
        verified = await asyncio.to_thread(passwords.verify_password, password, encoded)
        if account is None or verified is None:
            raise Unauthenticated(WRONG_CREDENTIALS)
        result = await self._replayed(username, request_id)
        if result is None:
            token = passwords.new_session_token()
            sealed = (
                passwords.seal_token(verified.seal_key, request_id, token) if request_id else ""
            )
            op = ops.Login(
                username,
                account.id,
                passwords.token_hash(token),
                sealed,
                request_id,
                self._now_ms(),
            )
            result = await self._commit(op)
        else:
            (sealed,) = _fields(result, "sealed_token")
            token = passwords.unseal_token(verified.seal_key, request_id, sealed)
        unread, last_id = _fields(result, "unread_count", "last_message_id")
        return pb.LoginResponse(session_token=token, unread_count=unread, last_message_id=last_id)

    async def Logout(self, request: pb.LogoutRequest, context) -> pb.LogoutResponse:
        _, token_hash = await self._session(context)
        await self._commit(ops.Logout(token_hash))
        return pb.LogoutResponse()

    async def ListAccounts(
        self, request: pb.ListAccountsRequest, context
    ) -> pb.ListAccountsResponse:
        await self._session(context)
        pattern = validation.pattern(request.pattern) or "*"
        size = validation.clamp(
            request.page_size, validation.PAGE_SIZE_DEFAULT, validation.PAGE_SIZE_MAX
        )
        after = _decode_page_token(request.page_token)
        names = await self._reads.run(lambda r: r.list_accounts(pattern, after, size + 1))
        more = len(names) > size
        names = names[:size]
        token = _encode_page_token(names[-1]) if more else ""
        return pb.ListAccountsResponse(usernames=names, next_page_token=token)

    async def DeleteAccount(
        self, request: pb.DeleteAccountRequest, context
    ) -> pb.DeleteAccountResponse:
        session, token_hash = await self._session(context)
        password = validation.password(request.password)
        account = self._reads.lookup.account(session.username)
        if account is None or account.id != session.account_id:
            raise Unauthenticated("this session's account no longer exists")
        if (
            await asyncio.to_thread(passwords.verify_password, password, account.password_hash)
            is None
        ):
            raise Unauthenticated("wrong password")
        await self._commit(ops.DeleteAccount(token_hash, account.id))
        return pb.DeleteAccountResponse()

    # -- messages -------------------------------------------------------------

    async def SendMessage(self, request: pb.SendMessageRequest, context) -> pb.SendMessageResponse:
        session, token_hash = await self._session(context)
        recipient = validation.username(request.recipient, "recipient")
        body = validation.body(request.body)
        request_id = validation.request_id(request.request_id)
        result = await self._replayed(session.username, request_id)
        if result is None:
            op = ops.SendMessage(
                token_hash,
                recipient,
                body,
                request_id,
                self._now_ms(),
                self._hub.is_online(recipient),
            )
            result = await self._commit(op)
        message_id, online = _fields(result, "message_id", "recipient_online")
        return pb.SendMessageResponse(message_id=message_id, recipient_online=online)

    async def ReadMessages(
        self, request: pb.ReadMessagesRequest, context
    ) -> pb.ReadMessagesResponse:
        _, token_hash = await self._session(context)
        limit = validation.clamp(
            request.limit, validation.READ_LIMIT_DEFAULT, validation.READ_LIMIT_MAX
        )
        result = await self._commit(ops.ReadMessages(token_hash, limit, READ_REPLY_MAX_BYTES))
        return pb.ReadMessagesResponse(
            messages=[_message_pb(StoredMessage(**m)) for m in result.value["messages"]],
            remaining_unread=result.value["remaining_unread"],
        )

    async def MarkRead(self, request: pb.MarkReadRequest, context) -> pb.MarkReadResponse:
        _, token_hash = await self._session(context)
        ids = validation.message_ids(list(request.message_ids))
        result = await self._commit(ops.MarkRead(token_hash, ids))
        return pb.MarkReadResponse(marked_count=result.value["marked_count"])

    async def DeleteMessages(
        self, request: pb.DeleteMessagesRequest, context
    ) -> pb.DeleteMessagesResponse:
        _, token_hash = await self._session(context)
        ids = validation.message_ids(list(request.message_ids))
        result = await self._commit(ops.DeleteMessages(token_hash, ids))
        return pb.DeleteMessagesResponse(deleted_count=result.value["deleted_count"])

    async def Subscribe(
        self, request: pb.SubscribeRequest, context
    ) -> AsyncIterator[pb.SubscribeEvent]:
        session, token_hash = await self._session(context)
        subscriber = self._hub.subscribe(session.username, token_hash)
        try:
            yield _leader_event(self._current_leader())
            last_id = request.after_id
            async for message in self._stored_after(session.username, last_id):
                last_id = message.id
                yield pb.SubscribeEvent(message=_message_pb(message))
            while True:
                event = await subscriber.queue.get()
                match event:
                    case StoredMessage() if event.id > last_id:
                        last_id = event.id
                        yield pb.SubscribeEvent(message=_message_pb(event))
                    case Overflowed():
                        subscriber.overflowed = False
                        async for message in self._stored_after(session.username, last_id):
                            last_id = message.id
                            yield pb.SubscribeEvent(message=_message_pb(message))
                    case Closed(reason=reason, unavailable=True):
                        raise Unavailable(reason)
                    case Closed(reason=reason):
                        raise Unauthenticated(reason)
                    case LeaderView() | None:
                        yield _leader_event(event)
                        if event is None or event.leader_id != self._coord.status().node_id:
                            raise Unavailable(
                                "leadership moved", event.leader_address if event else ""
                            )
        finally:
            self._hub.unsubscribe(subscriber)

    # -- cluster --------------------------------------------------------------

    async def GetClusterStatus(
        self, request: pb.GetClusterStatusRequest, context
    ) -> pb.ClusterStatus:
        status = self._coord.status()
        return pb.ClusterStatus(
            node_id=status.node_id,
            role=status.role,
            term=status.term,
            leader_id=status.leader_id,
            leader_address=status.leader_address,
            commit_index=status.commit_index,
            members=[
                pb.Member(
                    id=m.id,
                    address=m.address,
                    role=m.role,
                    in_sync=m.in_sync,
                    match_index=m.match_index,
                    reachable=m.reachable,
                )
                for m in status.members
            ],
            config_epoch=status.config_epoch,
            min_insync=status.min_insync,
        )

    # -- plumbing -------------------------------------------------------------

    async def _leader_ready(self) -> None:
        """Serve only as leader, and only once the state shows all it committed."""
        try:
            index = await self._coord.read_barrier()
        except NotLeader as exc:
            raise Unavailable(str(exc), exc.leader_address) from exc
        await self._applier.wait_applied(index)

    async def _session(self, context) -> tuple[Session, str]:
        """Authenticate the caller by its bearer token; returns the session and token hash."""
        await self._leader_ready()
        header = dict(context.invocation_metadata()).get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("missing 'authorization: Bearer <token>' metadata; log in first")
        token_hash = passwords.token_hash(token.strip())
        session = self._reads.lookup.session(token_hash)
        if session is None:
            raise Unauthenticated("unknown or logged-out session; log in again")
        return session, token_hash

    async def _replayed(self, username: str, request_id: str) -> ops.Result | None:
        """The stored reply of an earlier request with this id, raised if it was an error."""
        if not request_id:
            return None
        result = self._reads.lookup.stored_result(username, request_id)
        return _checked(result) if result is not None else None

    async def _commit(self, op: ops.Op) -> ops.Result:
        try:
            future = self._applier.submit(op)
        except NotLeader as exc:
            raise Unavailable(str(exc), exc.leader_address) from exc
        return _checked(await future)

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


def _checked(result: ops.Result) -> ops.Result:
    if not result.ok:
        raise ChatError.from_code_name(result.code, result.message)
    return result


def _fields(result: ops.Result, *names: str) -> list[Any]:
    """The reply fields a handler needs. Request ids are per user, not per kind of call,
    so an id reused for another kind of call finds that call's reply: say so clearly."""
    try:
        return [result.value[name] for name in names]
    except KeyError:
        raise InvalidArgument("this request_id was already used for a different call") from None


def _message_pb(message: StoredMessage) -> pb.Message:
    return pb.Message(
        id=message.id,
        sender=message.sender,
        recipient=message.recipient,
        body=message.body,
        sent_at_unix_ms=message.sent_at_ms,
        read=message.read,
    )


def _leader_event(view: LeaderView | None) -> pb.SubscribeEvent:
    if view is None:
        return pb.SubscribeEvent(leader=pb.LeaderInfo())
    return pb.SubscribeEvent(
        leader=pb.LeaderInfo(
            leader_id=view.leader_id, leader_address=view.leader_address, term=view.term
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
