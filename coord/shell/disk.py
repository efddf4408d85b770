"""Writes that wait out a full disk instead of ending the node.

A node whose disk is full (``SQLITE_FULL``, ``ENOSPC``) cannot make anything
durable, so it must not acknowledge anything; but the fault is usually
temporary (an operator frees space), and a process that exits on it only
comes back to the same full disk. So a write that fails this way is rolled
back and retried, with back-off, until it succeeds: nothing that depends on
it happens meanwhile (the log's Ready is not carried out, no ack leaves, no
entry is applied), the rest of the cluster sees a silent node and carries on
without it (the core counts the long write as a stall, so a leader steps
down), and the node says why in its log and in ``GetClusterStatus``. Once the
write goes through, the node catches up.

An I/O error (``EIO``, ``SQLITE_IOERR``) is not waited out: after a failed
fsync the kernel may have dropped the dirty pages and report the next fsync
as a success (the PostgreSQL "fsyncgate" lesson), so nothing written since
the last good fsync can be trusted in memory. Like anything else unexpected
(a corrupt file, a bug), it ends the process (``ReplicatedCoordinator.supervise``),
and the restarted node reads back only what really is on disk.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from coord.shell.metrics import DISK_FAULTS

log = logging.getLogger(__name__)
T = TypeVar("T")

FIRST_RETRY_S = 0.05
LAST_RETRY_S = 1.0
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_full_disk(exc: BaseException) -> bool:
    """A full disk (or quota): worth waiting out, unlike an I/O error, corruption or a bug."""
    if isinstance(exc, sqlite3.OperationalError):
        return "database or disk is full" in str(exc)
    return isinstance(exc, OSError) and exc.errno in FULL_ERRNOS


class DiskGuard:
    """Retries durable writes through a full disk and remembers what is failing."""

    def __init__(self) -> None:
        self._failing: dict[str, tuple[str, float]] = {}  # what -> (error, since)

    @property
    def failing(self) -> bool:
        """Whether some write is waiting for space (cheap: asked on every proposal)."""
        return bool(self._failing)

    @property
    def fault(self) -> str:
        """Why this node cannot make writes durable right now; '' when it can."""
        now = time.monotonic()
        return "; ".join(
            f"{what}: {error} (for {now - since:.0f} s)"
            for what, (error, since) in sorted(self._failing.items())
        )

    async def write(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """``await attempt()`` until it does not fail for a full disk."""
        delay = FIRST_RETRY_S
        while True:
            try:
                result = await attempt()
            except (OSError, sqlite3.OperationalError) as exc:
                if not is_full_disk(exc):
                    raise
                self._note(what, exc)
                await asyncio.sleep(delay)
                delay = min(2 * delay, LAST_RETRY_S)
                continue
            if self._failing.pop(what, None) is not None:
                log.warning(
                    "the %s is writable again; catching up", what, extra={"event": "disk_recovered"}
                )
            return result

    def _note(self, what: str, exc: BaseException) -> None:
        DISK_FAULTS.labels(what).inc()
        if what not in self._failing:
            log.error(
                "cannot write the %s: %s; waiting until it can be written",
                what,
                exc,
                extra={"event": "disk_fault"},
            )
            self._failing[what] = (str(exc), time.monotonic())
