"""How long the cluster has not been answering, as one status-bar state.

The client library publishes every step of a failover (failing over, no
leader, connected to a node that then fails again); a person wants one fact:
the app is reconnecting, for how long, and when it is back. So an outage
starts at the first state that is not connected and ends only once the client
has stayed connected for SETTLE_S: a leader found during a full restart that
fails again at once does not end it, and there is one "resumed", not several.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from client.library import ClientState, Connection, DeadlineExceeded, Unavailable

T = TypeVar("T")

TICK_S = 1.0  # the counter's resolution: the status bar is redrawn this often while down
SETTLE_S = 1.0  # connected this long before the outage counts as over

DOWN = (Connection.FAILING_OVER, Connection.NO_LEADER)
# What a call raises when the cluster did not answer within the library's deadline (its
# last attempt may time out just as the deadline passes): "not yet", not a refusal.
NOT_ANSWERING = (Unavailable, DeadlineExceeded)


class Outage:
    """Follows the client's states; calls changed() every tick while down, resumed() once after.

    Feed it from :meth:`ChatClient.add_state_listener` (on the client's loop).
    """

    def __init__(self, changed: Callable[[], None], resumed: Callable[[], None]) -> None:
        self._changed = changed
        self._resumed = resumed
        self._since: float | None = None  # monotonic start of the outage, None while up
        self._connected_at: float | None = None  # when the client last became connected
        self._ticker: asyncio.Task[None] | None = None

    @property
    def down(self) -> bool:
        return self._since is not None

    def label(self) -> str:
        """'reconnecting… 12 s' while down (whole seconds, counting up), else ''."""
        if self._since is None:
            return ""
        return f"reconnecting… {math.floor(time.monotonic() - self._since)} s"

    def note(self, state: ClientState) -> None:
        """One new client state."""
        if state.connection in DOWN:
            self._connected_at = None
            if self._since is None:
                self._since = time.monotonic()
                self._ticker = asyncio.get_running_loop().create_task(self._tick())
        elif state.connection is Connection.CONNECTED and self._connected_at is None:
            self._connected_at = time.monotonic()

    def stop(self) -> None:
        """Stop counting (the app is closing)."""
        if self._ticker is not None:
            self._ticker.cancel()

    async def _tick(self) -> None:
        """Redraw every tick while down; end the outage once connected for SETTLE_S."""
        while True:
            await asyncio.sleep(TICK_S if self._connected_at is None else SETTLE_S / 4)
            connected_at = self._connected_at
            if connected_at is not None and time.monotonic() - connected_at >= SETTLE_S:
                self._since = self._connected_at = self._ticker = None
                self._changed()
                self._resumed()
                return
            self._changed()


async def patiently(
    call: Callable[[], Awaitable[T]], waiting: Callable[[], None] | None = None
) -> T:
    """call() again each time the cluster does not answer (each try already waited the
    library's deadline); the status bar shows the outage meanwhile, and waiting (if any) is
    called once, so the pane says at most one line about it."""
    while True:
        try:
            return await call()
        except NOT_ANSWERING:
            if waiting is not None:
                waiting()
                waiting = None
