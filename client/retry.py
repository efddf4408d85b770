"""One retry policy for every call that must reach the leader: the chat library's and chatctl's.

Only what a new leader can cure is retried: UNAVAILABLE (not the leader, no
leader, connection lost), an attempt that hung while its call still has time (a
leader paused or cut off), and CANCELLED from a node shutting down. Each retry
waits a jittered exponential back-off and goes where the refusal pointed
(``leader-address``), or to a fresh search; once the call's deadline passes it
ends with :class:`proto.errors.Unavailable`. Every other status is raised at
once as its :class:`proto.errors.ChatError`, since no retry could change it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc

from client.connect import StatusCall, find_leader, leader_hint
from client.status import ClusterStatus
from proto.errors import Unavailable, error_for

__all__ = ["Budget", "RetryPolicy", "on_leader"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long and how often to retry while no leader answers."""

    deadline_s: float = 10.0
    first_backoff_s: float = 0.05
    max_backoff_s: float = 1.0
    multiplier: float = 2.0
    jitter: float = 0.5  # up to this fraction of each pause is cut at random
    probe_timeout_s: float = 1.0  # for one GetClusterStatus while looking for the leader
    # One attempt may hang on a leader that is paused (SIGSTOP) or cut off: give up on it
    # after this long and look for the new leader, which exists after about one lease.
    attempt_timeout_s: float = 2.0
    stream_check_s: float = 1.0  # how often an open Subscribe stream checks its node leads

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """The pause before retry number attempt (0-based): exponential, capped, jittered.

        Jitter spreads the retries of many clients after one failover so the new
        leader is not hit by all of them in the same instant.
        """
        ceiling = min(self.max_backoff_s, self.first_backoff_s * self.multiplier**attempt)
        return ceiling * (1 - self.jitter * rng.random())


def _nothing() -> None:
    pass


@dataclass
class Budget:
    """One call's retries: its deadline, how many pauses so far, and the last failure seen.

    ``on_give_up`` runs just before the call ends with Unavailable, so that whoever
    shows the connection's state can say that no leader answered.
    """

    policy: RetryPolicy
    rng: random.Random
    deadline: float
    on_give_up: Callable[[], None] = _nothing
    attempt: int = 0
    last_error: str = "no member answered"

    @classmethod
    def start(
        cls, policy: RetryPolicy, rng: random.Random, on_give_up: Callable[[], None] = _nothing
    ) -> Budget:
        """A budget whose deadline is the policy's from now."""
        deadline = asyncio.get_running_loop().time() + policy.deadline_s
        return cls(policy, rng, deadline, on_give_up)

    def remaining(self) -> float:
        return self.deadline - asyncio.get_running_loop().time()

    def attempt_timeout(self) -> float:
        """How long the next attempt may take: the policy's, but never past the deadline."""
        return max(min(self.remaining(), self.policy.attempt_timeout_s), 0.001)

    async def find_leader(
        self, candidates: Sequence[str], get_status: StatusCall, *, first: bool = False
    ) -> tuple[str, ClusterStatus] | None:
        """The address and answer of a candidate that leads (see connect.find_leader), asked
        within this budget's time; None, noting why, when none does."""
        search = await find_leader(
            candidates,
            get_status,
            self.policy.probe_timeout_s,
            first=first,
            time_left=self.remaining,
        )
        if search.leader is None or search.leader.status is None:
            self.last_error = search.error or self.last_error
            return None
        return search.leader.address, search.leader.status

    def failed(self, exc: grpc.aio.AioRpcError) -> str:
        """Raise exc's ChatError unless another leader may take the call; else note the
        failure and return where the refusal says the leader is ('' if it names none)."""
        hung = exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and self.remaining() > 0
        # A node shutting down may cancel calls it accepted but never ran; our own
        # cancellations surface as asyncio.CancelledError, never as this status.
        stopped = exc.code() == grpc.StatusCode.CANCELLED
        if exc.code() != grpc.StatusCode.UNAVAILABLE and not (hung or stopped):
            raise error_for(exc.code(), exc.details() or "") from None
        self.last_error = exc.details() or "unavailable"
        return leader_hint(exc)

    async def pause(self) -> None:
        """Pause before the next try, or give up with Unavailable once the deadline passed."""
        remaining = self.remaining()
        if remaining <= 0:
            self.on_give_up()
            raise Unavailable(
                f"no leader answered within {self.policy.deadline_s:g}s: {self.last_error}"
            )
        await asyncio.sleep(min(remaining, self.policy.backoff(self.attempt, self.rng)))
        self.attempt += 1


async def on_leader(
    attempt: Callable[[str], Awaitable[T]],
    budget: Budget,
    find: Callable[[Budget], Awaitable[str]],
    lost: Callable[[str, str], None],
) -> T:
    """attempt(leader address) until it succeeds, fails for real, or the budget runs out.

    find(budget) names the address to try ('' while no member knows a leader);
    lost(address, hint) hears that address failed and where it pointed instead.
    """
    while True:
        address = await find(budget)
        if address:
            try:
                return await attempt(address)
            except grpc.aio.AioRpcError as exc:
                lost(address, budget.failed(exc))
        await budget.pause()
