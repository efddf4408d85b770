"""The app's feed against a client whose answers the test releases: what is marked read
depends on what is shown when the history arrives, not when it was asked for."""

from __future__ import annotations

import asyncio

from client.feed import Feed
from client.library import HistoryPage, Message

WAIT_S = 5.0


class HeldClient:
    """History answers only once ``release`` is set; read marks are recorded."""

    username = "alice"

    def __init__(self, page: tuple[Message, ...]) -> None:
        self.page = page
        self.release = asyncio.Event()
        self.asked = asyncio.Event()
        self.marked: list[int] = []

    async def history(self, partner: str, before_id: int, limit: int) -> HistoryPage:
        self.asked.set()
        await self.release.wait()
        return HistoryPage(self.page, 0)

    async def mark_read(self, message_ids: list[int]) -> int:
        self.marked.extend(message_ids)
        return len(message_ids)


def unread_from_bob(message_id: int) -> Message:
    return Message(message_id, "bob", "alice", f"hi {message_id}", 0, read=False)


def feed_of(client: HeldClient) -> Feed:
    async def report(work: object) -> None:
        await work  # type: ignore[misc]

    return Feed(client, lambda: None, report, lambda text: None)  # type: ignore[arg-type]


async def opened_while(client: HeldClient, feed: Feed, meanwhile: str | None) -> None:
    """Open bob's conversation; before its history arrives, open ``meanwhile`` (if any)."""
    opening = asyncio.ensure_future(feed.open("bob"))
    await asyncio.wait_for(client.asked.wait(), WAIT_S)
    if meanwhile is not None:
        feed.conversations.open(meanwhile)
    client.release.set()
    await asyncio.wait_for(opening, WAIT_S)


async def test_history_still_shown_when_it_arrives_is_marked_read() -> None:
    client = HeldClient((unread_from_bob(8), unread_from_bob(7)))
    feed = feed_of(client)
    await opened_while(client, feed, meanwhile=None)
    assert sorted(client.marked) == [7, 8]
    assert not feed.conversations.get("bob").unread


async def test_history_arriving_after_a_switch_away_stays_unread() -> None:
    client = HeldClient((unread_from_bob(8), unread_from_bob(7)))
    feed = feed_of(client)
    await opened_while(client, feed, meanwhile="carol")
    assert client.marked == []  # never shown: the server keeps them unread
    assert feed.conversations.get("bob").unread == {7, 8}
