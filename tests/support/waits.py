"""Bounded polling for tests, for conditions no event announces."""

from __future__ import annotations

import time
from collections.abc import Callable

WAIT_S = 30.0


def wait_until(check: Callable[[], bool], what: str, limit_s: float = WAIT_S) -> None:
    """Poll check until it holds; fail naming what never happened. For conditions no
    event announces (a peer's status, a file on disk)."""
    deadline = time.monotonic() + limit_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting until {what}")
        time.sleep(0.05)
