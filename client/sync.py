"""A blocking face for :class:`client.library.ChatClient`, for scripts and threads.

grpc.aio objects belong to one event loop, so the wrapper owns a private loop
on a daemon thread and runs every call there; the caller's thread just waits
for the result. Retries, failover and typed errors are the async client's.

Example::

    with SyncChatClient(["127.0.0.1:7001"]) as chat:
        chat.login("alice", "correct horse")
        chat.send_message("bob", "hi")
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import grpc

from client.library import (
    AccountPage,
    ChatClient,
    ClientState,
    ClusterStatus,
    HistoryPage,
    LoginReply,
    Message,
    RetryPolicy,
    Sent,
    SessionInfo,
    StateListener,
    Unread,
)

T = TypeVar("T")


class SyncChatClient:
    """The same calls as :class:`ChatClient`, blocking until each one is done."""

    def __init__(
        self,
        members: Sequence[str],
        *,
        credentials: grpc.ChannelCredentials | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        self._client = ChatClient(members, credentials=credentials, policy=policy)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="chat-client", daemon=True
        )
        self._thread.start()

    def __enter__(self) -> SyncChatClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channels, then stop and join the loop thread."""
        if not self._loop.is_running():
            return
        self._run(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    @property
    def state(self) -> ClientState:
        return self._client.state

    @property
    def username(self) -> str:
        return self._client.username

    def add_state_listener(self, listener: StateListener) -> Callable[[], None]:
        """As :meth:`ChatClient.add_state_listener`; listener runs on the client's thread."""
        return self._client.add_state_listener(listener)

    def create_account(self, username: str, password: str) -> None:
        self._run(self._client.create_account(username, password))

    def login(self, username: str, password: str, client_label: str = "") -> LoginReply:
        return self._run(self._client.login(username, password, client_label))

    def history(self, partner: str, before_id: int = 0, limit: int = 0) -> HistoryPage:
        return self._run(self._client.history(partner, before_id, limit))

    def list_sessions(self) -> tuple[SessionInfo, ...]:
        return self._run(self._client.list_sessions())

    def end_session(self, session_id: str) -> None:
        self._run(self._client.end_session(session_id))

    def logout(self) -> None:
        self._run(self._client.logout())

    def list_accounts(
        self, pattern: str = "", page_size: int = 0, page_token: str = ""
    ) -> AccountPage:
        return self._run(self._client.list_accounts(pattern, page_size, page_token))

    def send_message(self, recipient: str, body: str, request_id: str = "") -> Sent:
        return self._run(self._client.send_message(recipient, body, request_id))

    def read_messages(self, limit: int = 0) -> Unread:
        return self._run(self._client.read_messages(limit))

    def mark_read(self, message_ids: Iterable[int]) -> int:
        return self._run(self._client.mark_read(message_ids))

    def delete_messages(self, message_ids: Iterable[int]) -> int:
        return self._run(self._client.delete_messages(message_ids))

    def delete_account(self, password: str) -> None:
        self._run(self._client.delete_account(password))

    def cluster_status(self) -> ClusterStatus:
        return self._run(self._client.cluster_status())

    def subscribe(self, after_id: int = 0) -> Iterator[Message]:
        """Blocking iterator over :meth:`ChatClient.subscribe`; closing it closes the stream."""
        stream = self._client.subscribe(after_id)
        try:
            while True:
                try:
                    yield self._run(_next(stream))
                except StopAsyncIteration:
                    return
        finally:
            self._run(stream.aclose())

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()


async def _next(stream: AsyncIterator[T]) -> T:
    """anext() as a coroutine: run_coroutine_threadsafe takes nothing else."""
    return await anext(stream)
