"""Open streams on this node, and fan-out of applied messages to the subscribed ones.

Streams are keyed by account id, not username: a name can be deleted and
registered again, and the new owner's messages must never reach a stream the
old owner opened. Memory here grows with the number of *open streams*, never
with users or messages, and a user can hold at most :data:`STREAMS_PER_USER` of each kind
(the hub counts both: live subscriptions and Session streams). Each
stream's queue is bounded by count and by bytes of message bodies: a stream
that falls behind (a client that stops reading stalls its gRPC writes, and
then its queue fills) is told to re-read from the database instead, and
whatever arrives meanwhile is dropped, since the database has it. Control
events cannot pile up either: only the newest pending leader change is kept,
and nothing is kept after the stream was told to close.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from chatnode import ops
from chatnode.ops import StoredMessage
from coord.boundary import LeaderView
from proto.errors import ResourceExhausted, Unavailable

QUEUE_LIMIT = 1024
"""Messages queued per stream at most."""

QUEUE_BYTES = 1 << 20
"""Bytes of message bodies queued per stream at most (bodies are up to 64 KiB each)."""

STREAMS_TOTAL = 1024
"""Open streams of both kinds on this node, all users together: what bounds the memory
their queues and outboxes may hold (chatnode.session_stream.REPLY_BYTES each)."""

STREAMS_PER_USER: dict[str, int] = {"Subscribe": 8, "Session": 8}
"""Open streams per user on this node, by kind: a client has one of each per device or tab.
A "Subscribe" stream is any live subscription (a Subscribe call, or a Session stream's
subscribe frame, which holds one of each kind)."""


@dataclass(frozen=True, slots=True)
class Closed:
    """The stream must end: its session or account is gone, or the node is stopping."""

    reason: str
    unavailable: bool = False  # True: try the leader again; False: log in again


@dataclass(frozen=True, slots=True)
class Overflowed:
    """Live events were dropped; the stream must catch up from the database."""


Event = StoredMessage | LeaderView | None | Closed | Overflowed


def _is_leader_event(event: Event) -> bool:
    return event is None or isinstance(event, LeaderView)


@dataclass(eq=False)
class Subscriber:
    """One open Subscribe stream: a bounded queue of events for its handler."""

    account_id: int
    username: str
    token_hash: str
    _events: deque[Event] = field(default_factory=deque)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _messages: int = 0
    _bytes: int = 0
    _overflowed: bool = False
    _closed: bool = False

    @property
    def queued(self) -> int:
        """Events waiting for the handler."""
        return len(self._events)

    @property
    def queued_bytes(self) -> int:
        """Bytes of message bodies waiting for the handler."""
        return self._bytes

    def offer(self, event: Event) -> None:
        """Queue event, within the bounds; see the module docstring for what is dropped."""
        if self._closed:
            return
        if isinstance(event, StoredMessage):
            if self._overflowed:
                return
            size = len(event.body.encode())
            if self._messages >= QUEUE_LIMIT or self._bytes + size > QUEUE_BYTES:
                self._overflowed = True
                event = Overflowed()
            else:
                self._messages += 1
                self._bytes += size
        elif isinstance(event, Closed):
            self._closed = True
        elif self._events and _is_leader_event(self._events[-1]):
            self._events[-1] = event  # the handler has not seen the older one: skip it
            return
        self._events.append(event)
        self._ready.set()

    async def get(self) -> Event:
        """The next event, waiting for one. After Overflowed, live messages queue again:
        the handler re-reads the database and skips ids it has already sent."""
        while not self._events:
            self._ready.clear()
            await self._ready.wait()
        event = self._events.popleft()
        if isinstance(event, StoredMessage):
            self._messages -= 1
            self._bytes -= len(event.body.encode())
        elif isinstance(event, Overflowed):
            self._overflowed = False
        return event


class LiveHub:
    """Who holds which streams, by account id, and delivery to the subscribed ones."""

    def __init__(self) -> None:
        self._by_account: defaultdict[int, set[Subscriber]] = defaultdict(set)
        self._online: Counter[str] = Counter()  # subscriptions by username: presence only
        self._open: Counter[tuple[str, int]] = Counter()  # (kind, account id): streams open
        self._total = 0  # streams open, all kinds and users
        self._sessions: set[asyncio.Future[Unavailable]] = set()  # one per Session stream

    def subscribe(self, account_id: int, username: str, token_hash: str) -> Subscriber:
        """Register a subscription, or ResourceExhausted if the user has too many open."""
        self._admit("Subscribe", account_id)
        subscriber = Subscriber(account_id, username, token_hash)
        self._by_account[account_id].add(subscriber)
        self._online[username] += 1
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        streams = self._by_account.get(subscriber.account_id)
        if streams is None or subscriber not in streams:
            return
        streams.discard(subscriber)
        self._release("Subscribe", subscriber.account_id)
        self._online[subscriber.username] -= 1
        if not self._online[subscriber.username]:
            del self._online[subscriber.username]
        if not streams:
            del self._by_account[subscriber.account_id]

    @contextlib.contextmanager
    def session_stream(self, account_id: int) -> Iterator[asyncio.Future[Unavailable]]:
        """Hold one of the user's Session stream slots while the block runs, or raise
        ResourceExhausted if all are taken. The future it gives resolves to a reason
        to the error to end with when :meth:`close_all` ends every stream (the node is
        stopping, or no longer leads)."""
        self._admit("Session", account_id)
        closing: asyncio.Future[Unavailable] = asyncio.get_running_loop().create_future()
        self._sessions.add(closing)
        try:
            yield closing
        finally:
            self._sessions.discard(closing)
            closing.cancel()
            self._release("Session", account_id)

    def open_streams(self) -> Counter[str]:
        """Streams open now by kind ("Subscribe", "Session"), counted when asked (metrics)."""
        counts: Counter[str] = Counter()
        for (kind, _), n in self._open.items():
            counts[kind] += n
        return counts

    def is_online(self, username: str) -> bool:
        """Whether someone subscribed under this name: the hint SendMessage replies with."""
        return username in self._online

    def applied(self, index: int, op: ops.Op, result: ops.Result) -> None:
        """What an op that applied (result.ok) at log index means to the open streams:
        every node calls this in log order, as it applies, so a stream registered
        before an op applies is always told of it."""
        match op, result.value:
            case ops.SendMessage(), ops.Sent() as sent if sent.message_id == index:
                # A retried request answers with the first message's id: nothing new to deliver.
                message = StoredMessage(
                    id=index,
                    sender=sent.sender,
                    recipient=op.recipient,
                    body=op.body,
                    sent_at_ms=sent.sent_at_ms,
                    read=False,
                )
                self.deliver(message, sent.recipient_id)
            case ops.Logout(), _:
                self.close_session(op.token_hash)
            case ops.EndSession(), _:
                self.close_session(op.ended_token_hash)
            case ops.DeleteAccount(), ops.AccountDeleted() as deleted:
                self.close_account(deleted.account_id)

    def deliver(self, message: StoredMessage, recipient_id: int) -> None:
        """Offer message to the streams of the account it was sent to (recipient_id)."""
        for subscriber in self._by_account.get(recipient_id, ()):
            subscriber.offer(message)

    def announce_leader(self, view: LeaderView | None) -> None:
        for streams in self._by_account.values():
            for subscriber in streams:
                subscriber.offer(view)

    def close_session(self, token_hash: str) -> None:
        for streams in self._by_account.values():
            for subscriber in streams:
                if subscriber.token_hash == token_hash:
                    subscriber.offer(Closed("session ended"))

    def close_all(self, reason: str, leader_address: str = "") -> None:
        """End every stream with UNAVAILABLE (try the leader again, at leader_address when
        known), idle ones included."""
        for streams in self._by_account.values():
            for subscriber in streams:
                subscriber.offer(Closed(reason, unavailable=True))
        for closing in self._sessions:
            if not closing.done():
                closing.set_result(Unavailable(reason, leader_address))

    def close_account(self, account_id: int) -> None:
        for subscriber in self._by_account.get(account_id, ()):
            subscriber.offer(Closed("account deleted"))

    def _admit(self, kind: str, account_id: int) -> None:
        limit = STREAMS_PER_USER[kind]
        if self._open[kind, account_id] >= limit:
            raise ResourceExhausted(
                f"at most {limit} open {kind} streams per user; close one first"
            )
        if self._total >= STREAMS_TOTAL:
            raise ResourceExhausted(
                f"this node holds its most open streams ({STREAMS_TOTAL}); retry later"
            )
        self._open[kind, account_id] += 1
        self._total += 1

    def _release(self, kind: str, account_id: int) -> None:
        self._total -= 1
        self._open[kind, account_id] -= 1
        if not self._open[kind, account_id]:
            del self._open[kind, account_id]
