"""Open Subscribe streams on this node, and fan-out of applied messages to them.

Memory here grows with the number of *open streams*, never with users or
messages: each stream has a bounded queue, and a stream that falls behind is
told to re-read from the database instead of growing its queue.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field

from chatnode.state import StoredMessage
from coord.boundary import LeaderView

QUEUE_LIMIT = 1024


@dataclass(frozen=True, slots=True)
class Closed:
    """The stream must end: its session or account is gone, or the node is stopping."""

    reason: str
    unavailable: bool = False  # True: try the leader again; False: log in again


@dataclass(frozen=True, slots=True)
class Overflowed:
    """Live events were dropped; the stream must catch up from the database."""


Event = StoredMessage | LeaderView | None | Closed | Overflowed


@dataclass(eq=False)
class Subscriber:
    """One open Subscribe stream."""

    username: str
    token_hash: str
    queue: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    overflowed: bool = False

    def offer(self, event: Event) -> None:
        """Queue event; on overflow keep one marker so the stream re-reads from the database."""
        if self.overflowed and isinstance(event, StoredMessage):
            return
        if self.queue.qsize() >= QUEUE_LIMIT and isinstance(event, StoredMessage):
            self.overflowed = True
            self.queue.put_nowait(Overflowed())
            return
        self.queue.put_nowait(event)


class LiveHub:
    """Who is subscribed, by username, and delivery to them."""

    def __init__(self) -> None:
        self._by_user: defaultdict[str, set[Subscriber]] = defaultdict(set)

    def subscribe(self, username: str, token_hash: str) -> Subscriber:
        subscriber = Subscriber(username, token_hash)
        self._by_user[username].add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        streams = self._by_user.get(subscriber.username)
        if streams is None:
            return
        streams.discard(subscriber)
        if not streams:
            del self._by_user[subscriber.username]

    def is_online(self, username: str) -> bool:
        return bool(self._by_user.get(username))

    def deliver(self, message: StoredMessage) -> None:
        for subscriber in self._by_user.get(message.recipient, ()):
            subscriber.offer(message)

    def announce_leader(self, view: LeaderView | None) -> None:
        for streams in self._by_user.values():
            for subscriber in streams:
                subscriber.offer(view)

    def close_session(self, token_hash: str) -> None:
        for streams in self._by_user.values():
            for subscriber in streams:
                if subscriber.token_hash == token_hash:
                    subscriber.offer(Closed("session ended"))

    def close_all(self, reason: str) -> None:
        for streams in self._by_user.values():
            for subscriber in streams:
                subscriber.offer(Closed(reason, unavailable=True))

    def close_user(self, username: str) -> None:
        for subscriber in self._by_user.get(username, ()):
            subscriber.offer(Closed("account deleted"))
