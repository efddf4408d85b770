"""Writes that wait out a full or failing disk instead of ending the node.

A node whose disk is full (``SQLITE_FULL``) or returns I/O errors cannot make
anything durable, so it must not acknowledge anything; but the fault is
often temporary (an operator frees space, a flaky device recovers), and a
process that exits on it only comes back to the same full disk. So a write
that fails this way is retried, with back-off, until it succeeds: nothing
that depends on it happens meanwhile (the log's Ready is not carried out, no
ack leaves, no entry is applied), the rest of the cluster sees a silent node
and carries on without it, and the node says why in its log and in
``GetClusterStatus``. Once the write goes through, the node catches up.

Only those two faults are waited out. Anything else (a corrupt file, a bug)
still ends the process (see ``ReplicatedCoordinator.supervise``).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from coord.metrics import DISK_FAULTS

log = logging.getLogger(__name__)
T = TypeVar("T")

FIRST_RETRY_S = 0.05
LAST_RETRY_S = 1.0
TRANSIENT = ("database or disk is full", "disk i/o error")


def is_transient(exc: BaseException) -> bool:
    """A full disk or an I/O error: worth waiting out, as opposed to corruption or a bug."""
    if isinstance(exc, sqlite3.OperationalError):
        return any(words in str(exc).lower() for words in TRANSIENT)
    return isinstance(exc, OSError)


class DiskGuard:
    """Retries durable writes through transient disk faults and remembers what is failing."""

    def __init__(self) -> None:
        self._failing: dict[str, tuple[str, float]] = {}  # what -> (error, since)

    @property
    def fault(self) -> str:
        """Why this node cannot make writes durable right now; '' when it can."""
        now = time.monotonic()
        return "; ".join(
            f"{what}: {error} (for {now - since:.0f} s)"
            for what, (error, since) in sorted(self._failing.items())
        )

    async def write(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """``await attempt()`` until it does not fail with a transient disk fault."""
        delay = FIRST_RETRY_S
        while True:
            try:
                result = await attempt()
            except (OSError, sqlite3.OperationalError) as exc:
                if not is_transient(exc):
                    raise
                self._note(what, exc)
                await asyncio.sleep(delay)
                delay = min(2 * delay, LAST_RETRY_S)
                continue
            if self._failing.pop(what, None) is not None:
                log.warning("the %s is writable again; catching up", what)
            return result

    def _note(self, what: str, exc: BaseException) -> None:
        DISK_FAULTS.labels(what).inc()
        if what not in self._failing:
            log.error("cannot write the %s: %s; waiting until it can be written", what, exc)
            self._failing[what] = (str(exc), time.monotonic())
