"""The app's conversations kept in step with the cluster.

Live delivery files each message under its conversation; opening one fetches
its history back to the first unread message; scrolling back fetches older
pages; and what is shown is marked read, never before. Everything here waits
out an outage quietly (the status bar shows it) and turns any other failure
into one line of the pane.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from client.conversations import Conversation, Conversations
from client.library import AuthError, ChatClient, ChatError, LoginReply, Message
from client.outage import NOT_ANSWERING, patiently
from proto.limits import IDS_MAX

HISTORY_PAGE = 200  # messages fetched per page of a conversation's history
UNREAD_PAGES = 10  # pages fetched on opening, at most, to reach the first unread message
LIVE_RETRY_S = 2.0  # pause before reopening live delivery after an error other than an outage

Report = Callable[[Awaitable[None]], Coroutine[Any, Any, None]]


class Feed:
    """Live delivery, history pages and read marks for one logged-in user's conversations.

    changed() is called after anything visible changed; report(work) awaits work beside the
    prompt and turns its failure into a line; error(text) says one.
    """

    def __init__(
        self,
        client: ChatClient,
        changed: Callable[[], None],
        report: Report,
        error: Callable[[str], None],
    ) -> None:
        self.conversations = Conversations()
        self._client = client
        self._changed = changed
        self._report = report
        self._error = error
        self._bell_listeners: list[Callable[[], None]] = []
        self._live: asyncio.Task[None] | None = None
        self._chores: set[asyncio.Task[None]] = set()  # conversations opening, pages loading
        self._loading: set[str] = set()  # partners whose older history is being fetched
        self._backlog_until = 0  # messages up to this id were there at login: no bell

    def add_bell_listener(self, listener: Callable[[], None]) -> None:
        """Call listener when a new message arrives in a conversation that is not open."""
        self._bell_listeners.append(listener)

    def start(self, session: LoginReply) -> None:
        """Follow session's messages. With unread ones, delivery starts from the first
        stored message, so each unread one is counted under its conversation (read ones
        are skipped); otherwise it starts after the last, for new ones only."""
        self._backlog_until = session.last_message_id
        start = 0 if session.unread_count else session.last_message_id
        self._live = asyncio.create_task(self._follow_live(start))

    async def stop(self) -> None:
        """Stop delivery and every fetch; forget the conversations (a logout)."""
        task, self._live = self._live, None
        chores, self._chores = [*self._chores, *([task] if task else [])], set()
        for chore in chores:
            chore.cancel()
        await asyncio.gather(*chores, return_exceptions=True)
        self._loading.clear()
        self.conversations = Conversations()

    def open(self, partner: str) -> Awaitable[None]:
        """Show partner's conversation now; await the result to have it caught up."""
        return self._catch_up(self.conversations.open(partner))

    def open_later(self, partner: str) -> None:
        """Show partner's conversation now and catch it up beside the prompt (keys switch
        faster than the cluster answers)."""
        self._chore(self.open(partner))

    def load_older(self) -> None:
        """Fetch the open conversation's next older page, unless it is all here or coming."""
        conversation = self.conversations.current
        if conversation.older and conversation.partner not in self._loading:
            self._loading.add(conversation.partner)
            self._chore(self._load_older(conversation))

    async def _follow_live(self, after_id: int) -> None:
        """File each message as it arrives; outlive failovers."""
        while True:
            try:
                async for message in self._client.subscribe(after_id):
                    after_id = message.id
                    if not message.read:  # a read one comes only in the backlog: skip it
                        await self._received(message)
            except AuthError as exc:
                self._error(f"live messages stopped: {exc}")
                return
            except NOT_ANSWERING:
                continue  # an outage: the status bar says so, and subscribe() waited already
            except ChatError as exc:
                self._error(f"live messages paused: {exc}")
            await asyncio.sleep(LIVE_RETRY_S)

    async def _received(self, message: Message) -> None:
        """Shown (so read) if its conversation is open; otherwise counted as unread, with
        the bell for a new one."""
        conversation = self.conversations.receive(message, self._client.username)
        self._changed()
        if conversation is self.conversations.current:
            await self._mark_read([message.id])
        elif message.id > self._backlog_until:
            for listener in list(self._bell_listeners):
                listener()

    async def _catch_up(self, conversation: Conversation) -> None:
        """Its newest history on first opening, back to the first unread message; if it is
        still open then, what was unread is shown, so read, with the 'new' rule before it."""
        if conversation.partner and conversation.older is None:
            await self._fetch(conversation, 0)
            for _ in range(UNREAD_PAGES):
                oldest = min(conversation.messages, default=0)
                if not (conversation.older and oldest in conversation.unread):
                    break
                await self._fetch(conversation, conversation.older)
        if conversation is self.conversations.current:
            await self._mark_read(conversation.see())
        self._changed()

    async def _load_older(self, conversation: Conversation) -> None:
        try:
            if conversation.older:
                await self._fetch(conversation, conversation.older)
                if conversation is self.conversations.current:
                    await self._mark_read(conversation.see(move_rule=False))
        finally:
            self._loading.discard(conversation.partner)
            self._changed()

    async def _fetch(self, conversation: Conversation, before_id: int) -> None:
        """One page of history into conversation; unread ones among it are unread there."""
        partner, me = conversation.partner, self._client.username
        page = await patiently(lambda: self._client.history(partner, before_id, HISTORY_PAGE))
        conversation.add(page.messages)
        conversation.unread.update(m.id for m in page.messages if not m.read and m.sender != me)
        conversation.older = page.next_before_id

    async def _mark_read(self, message_ids: list[int]) -> None:
        for start in range(0, len(message_ids), IDS_MAX):
            batch = message_ids[start : start + IDS_MAX]
            try:
                await patiently(lambda batch=batch: self._client.mark_read(batch))
            except ChatError as exc:
                self._error(f"could not mark {len(batch)} message(s) read: {exc}")

    def _chore(self, work: Awaitable[None]) -> None:
        task = asyncio.create_task(self._report(work))
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)
