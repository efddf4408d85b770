"""Messages typed but not yet accepted by the cluster, sent one at a time, in order.

A line typed during an outage must neither be lost nor block the prompt, and
must reach its recipient once. Each entry gets its request id when it is
typed and keeps it for every attempt, however long the outage lasts: the
library's own retries stop at its deadline, but the outbox calls again with
the same id, so a send whose reply was lost is answered from the cluster's
record, not applied twice.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from client.library import ChatClient, ChatError, Sent
from client.outage import NOT_ANSWERING


@dataclass(frozen=True, slots=True)
class Pending:
    """One typed message waiting for the cluster."""

    recipient: str
    body: str
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)


Delivered = Callable[[Pending, Sent], None]
Refused = Callable[[Pending, ChatError], None]


class Outbox:
    """Sends queued messages in the order they were added; reports each outcome once."""

    def __init__(self, client: ChatClient, delivered: Delivered, refused: Refused) -> None:
        self._client = client
        self._delivered = delivered
        self._refused = refused
        self._queue: deque[Pending] = deque()
        self._wake = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None

    @property
    def pending(self) -> tuple[Pending, ...]:
        """What is still to be sent, oldest first (the first may be in flight)."""
        return tuple(self._queue)

    def add(self, recipient: str, body: str) -> None:
        self._queue.append(Pending(recipient, body))
        self._wake.set()
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send_all())

    async def close(self) -> tuple[Pending, ...]:
        """Stop sending; returns what was never confirmed (it may still arrive once)."""
        task, self._sender = self._sender, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        unsent, self._queue = tuple(self._queue), deque()
        return unsent

    async def _send_all(self) -> None:
        while True:
            while self._queue:
                await self._send(self._queue[0])
            self._wake.clear()
            await self._wake.wait()

    async def _send(self, entry: Pending) -> None:
        """Until the cluster answers: not answering only means 'not yet', so call again."""
        while True:
            try:
                sent = await self._client.send_message(
                    entry.recipient, entry.body, request_id=entry.request_id
                )
            except NOT_ANSWERING:
                continue
            except ChatError as exc:
                self._queue.popleft()
                self._refused(entry, exc)
                return
            self._queue.popleft()
            self._delivered(entry, sent)
            return
