"""Timing and size settings of the protocol core, in one frozen value.

Every duration is in integer milliseconds of the node's own monotonic clock.
Nothing here is compared across machines: ``max_drift`` bounds how much faster
one node's clock may run than another's, which is all the leases rely on.
"""

from __future__ import annotations

from dataclasses import dataclass

from coord.core.errors import LocalProtocolError


@dataclass(frozen=True, slots=True)
class Settings:
    """Tuning of one node. The shell must call ``tick`` at least every ``heartbeat_ms``.

    ``stall_ms`` is the input gap the core takes for a stall (SIGSTOP, swap,
    starvation). A first design set the restarted flag only for gaps over
    ``lease_ms``; but a leader already drops a follower whose ack is ``lease_ms``
    late, which a pause of ``lease_ms`` minus one round trip causes, and a
    stalled leader may have been replaced by the time it wakes. A stall longer
    than ``stall_ms`` therefore sets ``restarted`` and makes a leader step down.
    This assumes what fail-stop mode assumes anyway: a round trip between live
    nodes, plus ``stall_ms`` and one heartbeat, fits well inside the lease
    (coord/PROTOCOL.md §4).
    """

    lease_ms: int = 1000
    heartbeat_ms: int = 100
    election_wait_ms: int = 250
    stall_ms: int = 250
    max_drift: float = 0.05
    max_batch_bytes: int = 1 << 20
    max_inflight_batches: int = 64
    cached_entries: int = 512

    def __post_init__(self) -> None:
        if not 0 < 2 * self.heartbeat_ms < self.stall_ms < self.lease_ms:
            raise LocalProtocolError("need 0 < 2*heartbeat_ms < stall_ms < lease_ms")
        if not 0 < self.election_wait_ms < self.lease_ms:
            raise LocalProtocolError("need 0 < election_wait_ms < lease_ms")
        if not 0 <= self.max_drift < 1:
            raise LocalProtocolError("need 0 <= max_drift < 1")
        if self.max_batch_bytes <= 0 or self.max_inflight_batches <= 0:
            raise LocalProtocolError("batch limits must be positive")

    @property
    def election_stagger_ms(self) -> int:
        """The window candidates spread over once a lease has run out: two heartbeats.

        Not half a lease (coord/PROTOCOL.md §8.4): candidates already take slots in
        id order and a pre-vote makes a collision cost one more round, so a longer wait
        only delays the failover (measured: SIGSTOP failover 1.86 s -> see docs/design.md).
        """
        return min(2 * self.heartbeat_ms, self.lease_ms // 2)

    @property
    def leader_lease_ms(self) -> int:
        """How long after a heartbeat's send time the leader may count on it."""
        return int(self.lease_ms * (1 - self.max_drift))

    @property
    def resend_ms(self) -> int:
        """How long unacked entries wait before the leader sends them again."""
        return 2 * self.heartbeat_ms
