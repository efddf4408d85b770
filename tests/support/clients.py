"""Watching a client library from a test: the states it publishes and the messages its
subscription delivers, each with a bounded wait."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from client.library import ChatClient, ClientState, Message

WAIT_S = 15.0


class StateLog:
    """Every state a client publishes, and a bounded wait for one."""

    def __init__(self, client: ChatClient) -> None:
        self.states: list[ClientState] = [client.state]
        self._changed = asyncio.Event()
        client.add_state_listener(self._record)

    def _record(self, state: ClientState) -> None:
        self.states.append(state)
        self._changed.set()

    async def wait_for(self, predicate: Callable[[ClientState], bool]) -> ClientState:
        async with asyncio.timeout(WAIT_S):
            while not predicate(self.states[-1]):
                self._changed.clear()
                await self._changed.wait()
        return self.states[-1]


class Inbox:
    """Collects a subscription's messages in a task; wait until a count has arrived."""

    def __init__(self, client: ChatClient, after_id: int = 0) -> None:
        self.messages: list[Message] = []
        self._arrived = asyncio.Event()
        self.task = asyncio.create_task(self._collect(client, after_id))

    async def _collect(self, client: ChatClient, after_id: int) -> None:
        async for message in client.subscribe(after_id):
            self.messages.append(message)
            self._arrived.set()

    async def wait_for(self, count: int) -> list[Message]:
        async with asyncio.timeout(WAIT_S):
            while len(self.messages) < count and not self.task.done():
                self._arrived.clear()
                await self._arrived.wait()
        if self.task.done():
            self.task.result()  # surface the subscription's error
        return self.messages

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
