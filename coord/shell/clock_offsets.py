"""How far each follower's wall clock is from the leader's, measured from heartbeats.

Nothing in the protocol trusts a wall clock (leases and the cluster clock run on
monotonic clocks), but an operator should know when members disagree by seconds or
hours: logs and message times are read against them, and a member whose clock is off
freezes or caps the cluster clock while it leads (chatnode/cluster_clock.py). So, as
etcd does, the leader estimates each peer's offset from Append round trips: the
follower stamps its wall clock on its AppendReply (the transport does, on the wire
only), and the leader, knowing the round trip on its monotonic clock, takes the
follower's reading to be of the round trip's middle. The estimate is off by at most
half the round trip; of the recent samples the one with the shortest round trip is
kept. An offset beyond WARN_MS is logged once (and again after it recovered), shown
in ``chatctl status`` and exported as a metric.

The same samples tell the cluster clock when this leader's wall clock may be taken
for real time (:meth:`ClockOffsets.agrees`): when a majority of the members read the
same time within AGREE_MS. That is the only evidence of real time across a stop of
the whole cluster, which no monotonic clock spans.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from coord.shell.metrics import PEER_CLOCK_OFFSET

log = logging.getLogger(__name__)

WARN_MS = 1000
SAMPLES = 16
AGREE_MS = WARN_MS
"""Wall clocks this close (the estimate's error included) tell the same time."""
FRESH_MS = 10_000
"""A sample older than this says nothing of a clock now: it may have been stepped since."""


@dataclass(frozen=True, slots=True)
class Sample:
    offset_ms: int  # the follower's wall clock minus the leader's
    rtt_ms: int
    mono_ms: int  # the leader's clocks when it took the sample
    wall_ms: int


@dataclass(slots=True)
class _Peer:
    samples: deque[Sample] = field(default_factory=lambda: deque(maxlen=SAMPLES))
    warned: bool = False


def estimate(
    follower_wall_ms: int, echo_mono_ms: int, now_mono_ms: int, now_wall_ms: int
) -> Sample:
    """One sample: the follower read its wall clock at the round trip's middle (we assume)."""
    rtt = max(0, now_mono_ms - echo_mono_ms)
    return Sample(follower_wall_ms - (now_wall_ms - rtt // 2), rtt, now_mono_ms, now_wall_ms)


def _sharpest(samples: Iterable[Sample]) -> Sample:
    """The sample with the shortest round trip: the least doubt about the offset."""
    return min(samples, key=lambda s: s.rtt_ms)


class ClockOffsets:
    """The latest estimate per peer (the best of its last SAMPLES round trips)."""

    def __init__(self) -> None:
        self._peers: dict[int, _Peer] = {}

    def offer(self, peer: int, sample: Sample) -> None:
        state = self._peers.setdefault(peer, _Peer())
        state.samples.append(sample)
        best = _sharpest(state.samples)
        PEER_CLOCK_OFFSET.labels(str(peer)).set(best.offset_ms / 1000)
        # Off by more than WARN_MS beyond doubt: a reply delayed by seconds (a peer busy
        # installing a snapshot) says little of its clock, and is no reason to warn.
        far = abs(best.offset_ms) - best.rtt_ms // 2 > WARN_MS
        if far and not state.warned:
            log.warning(
                "node %d's wall clock is %+.3f s from this leader's (round trip %d ms): "
                "check its time sync",
                peer,
                best.offset_ms / 1000,
                best.rtt_ms,
                extra={"event": "clock_offset"},
            )
        state.warned = far

    def offset_ms(self, peer: int) -> int | None:
        """The peer's offset from the sample with the shortest round trip, None if unknown."""
        state = self._peers.get(peer)
        if state is None or not state.samples:
            return None
        return _sharpest(state.samples).offset_ms

    def agrees(self, peer: int, wall_ms: int, mono_ms: int) -> bool:
        """Whether the peer's wall clock reads within AGREE_MS of wall_ms, this leader's
        reading at its monotonic time mono_ms, judged by a fresh sample.

        A sample's offset is against the leader's wall clock of its time. If that clock
        was stepped since (its reading less the monotonic one moved), the step is taken
        off the offset: a leader whose own clock jumps hours ahead disagrees with its
        peers at once, not only after new samples arrive.
        """
        state = self._peers.get(peer)
        fresh = [s for s in state.samples if mono_ms - s.mono_ms <= FRESH_MS] if state else []
        if not fresh:
            return False
        best = _sharpest(fresh)
        stepped = (wall_ms - mono_ms) - (best.wall_ms - best.mono_ms)
        return abs(best.offset_ms - stepped) + best.rtt_ms // 2 <= AGREE_MS

    def forget(self, keep: set[int]) -> None:
        """Drop the peers that are no longer members."""
        for peer in set(self._peers) - keep:
            del self._peers[peer]
            PEER_CLOCK_OFFSET.remove(str(peer))
