"""How many ops each account may propose: a fair share of the log, by token bucket.

Every op a call proposes costs every replica a durable log entry and an apply,
whatever the op turns out to do (a retry answered from its stored reply
included), so without a bound one user's flood (a request_id replayed from many
threads, a send loop) takes the log from everyone and delays the heartbeats
behind it. The leader therefore charges each account's bucket before it
proposes; an empty bucket answers RESOURCE_EXHAUSTED at once, and nothing is
proposed.

The share is fair and work-conserving: the budget (``rate`` ops a second) is
split evenly between the accounts that proposed within the last
:data:`ACTIVE_WINDOW_S`, so a user alone may use all of it, and never below
``floor`` ops a second each, an interactive pace a crowd cannot squeeze out.
A bucket holds at most :data:`BURST_S` seconds of its share. Memory is one
small record per account active in the window.

Time is this process's monotonic clock: admission is a local decision of the
leader, never replicated, so no wall clock is involved.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from proto.errors import ResourceExhausted

DEFAULT_RATE = 5000.0
"""Ops a second for all accounts together: above what the log commits on two cores, so
it only ever divides the log between users; it never idles it."""

DEFAULT_FLOOR = 50.0
"""Ops a second each account may always make, however many are active."""

BURST_S = 1.0
ACTIVE_WINDOW_S = 10.0


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float  # the monotonic time tokens was last brought up to date


class ProposalBudget:
    """Token buckets by account id; :meth:`admit` before each proposal."""

    def __init__(
        self,
        rate: float = DEFAULT_RATE,
        floor: float = DEFAULT_FLOOR,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or floor <= 0:
            raise ValueError("rates must be positive")
        self._rate = rate
        self._floor = min(floor, rate)
        self._clock = clock
        self._buckets: OrderedDict[int, _Bucket] = OrderedDict()  # least recently used first

    @property
    def active(self) -> int:
        """Accounts that proposed within the window (those the budget is split between)."""
        self._forget_idle(self._clock())
        return len(self._buckets)

    def share(self) -> float:
        """Each active account's rate now, in ops a second."""
        return max(self._floor, self._rate / max(1, len(self._buckets)))

    def admit(self, account_id: int) -> None:
        """Take one op from the account's bucket, or raise ResourceExhausted."""
        now = self._clock()
        self._forget_idle(now)
        bucket = self._buckets.pop(account_id, None)
        self._buckets[account_id] = bucket = bucket or _Bucket(0.0, now - BURST_S)
        share = self.share()
        bucket.tokens = min(share * BURST_S, bucket.tokens + (now - bucket.updated) * share)
        bucket.updated = now
        if bucket.tokens < 1:
            raise ResourceExhausted(
                f"too many requests from this account: at most {share:.0f} a second now; "
                "slow down and retry"
            )
        bucket.tokens -= 1

    def _forget_idle(self, now: float) -> None:
        while self._buckets:
            oldest = next(iter(self._buckets.values()))
            if now - oldest.updated <= ACTIVE_WINDOW_S:
                return
            self._buckets.popitem(last=False)
