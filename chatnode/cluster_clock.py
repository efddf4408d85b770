"""The cluster clock: the one time every replicated decision is judged by.

Session deadlines, the age of stored replies and the pruning of both are decided
by the state machine from the ``now_ms`` an op carries, so that time must mean
the same on every replica and across leaders. A leader's wall clock cannot be
that time by itself: machines differ by hours (a hardware clock kept in local
time), and a new leader whose clock is ahead would expire every session and
forget every stored reply at once; one that is behind would keep sessions past
their end. This module decides the ``now_ms`` a leader stamps. It is pure: the
caller passes both clock readings in, so tests drive it with any clocks.

The rules (docs/design.md, "The cluster clock", argues them):

1. **Never backwards.** A stamp is at least the newest cluster time this node
   knows was stamped (``floor``). The state machine also judges each op by the
   greater of its stamp and the newest it applied, so time in the state never
   decreases whatever an op carries, and neither do ``sent_at`` times in id order.
2. **Never faster than real time.** A node that learned at local monotonic time
   ``m`` that cluster time ``C`` had been stamped knows that at least ``t - m``
   of real time has passed since, at its monotonic time ``t``. So it never stamps
   more than ``C + (t - m)`` (``ceiling``): across a leader change the clock
   advances by no more than the real time that passed, measured on the new
   leader's own monotonic clock, whatever its wall clock says. Every stamp obeys
   this rule against the newest stamp before it, so by induction it holds
   against all of them.
3. **Close to real time.** Between those bounds the leader's wall clock decides.
   While leaders' wall clocks agree with real time the ceiling is above the wall
   clock only by the replication delay, so stamps follow the wall clock. A leader
   whose wall clock is ahead stamps the ceiling (time runs at its monotonic rate);
   one whose clock is behind the cluster stamps the floor (time stands still
   until its clock catches up: the safe direction, since sessions then last
   longer and replies are kept longer, never the reverse).
4. **Real time, when a majority says so.** Rule 2 cannot see time that passed
   while no node ran: no monotonic clock spans a stop of the whole cluster, so
   after one the clock would lag real time by the downtime for ever (stamps pinned
   to the ceiling, a wall clock that never falls back under it). A leader whose
   wall clock reads the same time as a majority of the members, itself counted
   (within a second, measured on its heartbeats), takes it for real time and
   stamps it, above the ceiling if need be. One machine's clock, however wrong,
   still never moves the cluster clock faster than real time; only a majority
   agreeing on a wrong time could, and the same majority decides everything else.

What this node learns arrives through :meth:`ClusterClock.observe`: each stamp it
makes as leader, each stamp it applies, and at start the newest time the state
holds (read then, so ``m`` is the start: the downtime before it is not counted,
and the clock lags real time by it until rule 4 applies).
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["ClusterClock"]


class ClusterClock:
    """What one node knows of the cluster clock, and the stamps it makes as leader."""

    def __init__(self) -> None:
        self._newest_ms = 0  # the newest cluster time known to have been stamped
        self._seen_mono_ms: int | None = None  # our monotonic time when we first knew it

    def observe(self, cluster_ms: int, mono_ms: int) -> None:
        """The newest op stamped cluster_ms, at or before our monotonic time mono_ms.

        A stamp as new as the newest known replaces it, and so does the same time
        stamped again later (a leader whose time stood still): rule 2 holds against
        the latest stamp, whenever it was made, so the clock never advances faster
        than real time between two consecutive stamps, across any leader change. An
        older stamp says nothing more.
        """
        if cluster_ms >= self._newest_ms or self._seen_mono_ms is None:
            self._newest_ms = max(self._newest_ms, cluster_ms)
            self._seen_mono_ms = mono_ms

    def _ceiling_ms(self, mono_ms: int) -> int | None:
        """The most a stamp may say at mono_ms, or None before anything was observed."""
        if self._seen_mono_ms is None:
            return None
        return self._newest_ms + max(0, mono_ms - self._seen_mono_ms)

    def stamp(self, wall_ms: int, mono_ms: int, agreed: Callable[[int, int], bool]) -> int:
        """The cluster time for an op proposed now: the wall clock, within the bounds.

        ``agreed(wall_ms, mono_ms)`` says whether a majority's wall clocks agree with
        wall_ms (rule 4); it is asked only when the wall clock is above the ceiling. A
        clock that has observed nothing (a new cluster's first leader, before its state
        was read) has no ceiling: the wall clock is all there is.
        """
        ceiling = self._ceiling_ms(mono_ms)
        if ceiling is not None and wall_ms > ceiling and not agreed(wall_ms, mono_ms):
            wall_ms = ceiling
        now = max(self._newest_ms, wall_ms)
        self.observe(now, mono_ms)
        return now
