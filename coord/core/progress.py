"""What the leader knows about one follower: replication progress and heartbeat acks.

Replication follows etcd raft's ``tracker.Progress``: *probe* sends one batch
and waits for the answer (after a restart or a mismatch), *replicate*
pipelines up to ``max_inflight_batches`` batches, *snapshot* waits for the
follower to install a snapshot because the entries it needs are compacted.

What to send a follower at a given moment is one pure decision,
:func:`to_send`, over its :class:`Progress` and the log's bounds (etcd's
``maybeSendAppend``): the node carries it out.

Heartbeat acks are cumulative: a reply echoes the send time of the message it
answers, and answers every earlier one too. The oldest unanswered send time
is what the ISR-shrink timeout measures; the newest answered one is what the
leader lease counts on. The same echo tells how far behind in time a follower
is (``caught_up_ms``): an answer holding every entry the leader had when it
sent what is answered shows the follower had the leader's whole log then.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

MAX_MARKS = 1024
"""Send times kept per follower for ``caught_up_ms``; past that (a follower silent for
long) newer ones are not kept and its lag in time reads high, never low."""

__all__ = ["Mode", "Progress", "Send", "to_send"]


class Mode(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Progress:
    """The leader's bookkeeping for one follower, for the current term only."""

    def __init__(self, next_index: int, now_ms: int) -> None:
        # What was sent, to refuse replies claiming more (a forged ack must not
        # make the leader count entries a follower never received):
        self.created_ms = now_ms  # replies echoing an earlier send time predate us
        self.last_sent_ms = now_ms  # the latest send time a reply may echo
        self.sent_max = 0  # the highest index any Append to this follower reached
        self.snapshot_ordered = False  # a snapshot reply may then ack up to our commit
        self.match = 0
        self.next = next_index
        self.mode = Mode.PROBE
        self.probe_sent = False
        self.inflight: deque[int] = deque()
        self.progress_ms = now_ms
        self.snapshot_ms = now_ms
        self.unacked: deque[int] = deque()
        self.acked_sent_at: int | None = None
        self.last_heard_ms: int | None = None
        self.refused = False
        self.fence = 0
        # The latest send time at which the follower is known to have held our whole
        # log, and the (send time, our last index then) still unanswered behind it.
        self.caught_up_ms = now_ms
        self._marks: deque[tuple[int, int]] = deque()

    # -- replication -----------------------------------------------------------

    def can_send_entries(self, max_inflight: int) -> bool:
        if self.mode is Mode.PROBE:
            return not self.probe_sent
        return self.mode is Mode.REPLICATE and len(self.inflight) < max_inflight

    def sent_entries(self, last_index: int, now_ms: int) -> None:
        if self.mode is Mode.PROBE:
            self.probe_sent = True
            self.progress_ms = now_ms
        else:
            if not self.inflight:
                # Nothing was outstanding: the resend timer starts now, not at the last ack.
                self.progress_ms = now_ms
            self.inflight.append(last_index)
        self.next = last_index + 1

    def update(self, match: int, snapshot_index: int, now_ms: int) -> bool:
        """The follower holds our log up to ``match``; False if that is old news.

        A follower waiting for a snapshot that now holds everything up to ours
        (``snapshot_index``) has installed it: probe from after ``match``.
        """
        self.probe_sent = False
        if match <= self.match:
            return False
        self.match = match
        self.next = max(self.next, match + 1)
        self.progress_ms = now_ms
        while self.inflight and self.inflight[0] <= match:
            self.inflight.popleft()
        if self.mode is Mode.PROBE:
            self.mode = Mode.REPLICATE
        elif self.mode is Mode.SNAPSHOT and match >= snapshot_index:
            self.restart_probe(match + 1, now_ms)
        return True

    def reject(self, rejected: int, hint: int, now_ms: int) -> bool:
        """The follower lacks ``rejected``; go back to probing from the hint, unless stale."""
        if rejected <= self.match or self.mode is Mode.SNAPSHOT:
            return False
        self.restart_probe(max(self.match + 1, min(rejected, hint + 1)), now_ms)
        return True

    def restart_probe(self, next_index: int, now_ms: int) -> None:
        self.mode = Mode.PROBE
        self.probe_sent = False
        self.inflight.clear()
        self.next = next_index
        self.progress_ms = now_ms

    def stalled(self, now_ms: int, last_index: int, resend_ms: int) -> bool:
        """Entries went out but no answer moved ``match`` for ``resend_ms``: resend."""
        return (
            self.mode is not Mode.SNAPSHOT
            and self.match < last_index
            and now_ms - self.progress_ms >= resend_ms
        )

    def need_snapshot(self, now_ms: int) -> None:
        self.mode = Mode.SNAPSHOT
        self.inflight.clear()
        self.snapshot_ms = now_ms

    def snapshot_overdue(self, now_ms: int, lease_ms: int) -> bool:
        """A snapshot needed for a lease and not installed yet: order it again (a
        follower that followed nobody when the order came dropped it, PROTOCOL.md §10)."""
        return self.mode is Mode.SNAPSHOT and now_ms - self.snapshot_ms >= lease_ms

    # -- heartbeats --------------------------------------------------------------

    def append_sent(self, sent_at_ms: int, reaches: int, last_index: int) -> None:
        """An Append sent at ``sent_at_ms``, when our log ended at ``last_index``, told the
        follower about indexes up to ``reaches``."""
        self.last_sent_ms = max(self.last_sent_ms, sent_at_ms)
        self.sent_max = max(self.sent_max, reaches)
        if not self.unacked or self.unacked[-1] != sent_at_ms:
            self.unacked.append(sent_at_ms)
        # One mark per log end is enough: of two with the same end, the earlier is
        # answered first, and the later gets a mark again once it is gone.
        if len(self._marks) < MAX_MARKS and (not self._marks or self._marks[-1][1] != last_index):
            self._marks.append((sent_at_ms, last_index))

    def caught_up(self, echo_sent_at_ms: int) -> None:
        """A reply echoing ``echo_sent_at_ms`` arrived and ``match`` is up to date: each
        answered send time at which our log ended within ``match`` is a time the
        follower is now known to have held our whole log."""
        while self._marks and self._marks[0][0] <= echo_sent_at_ms:
            sent_at, last_index = self._marks.popleft()
            if last_index <= self.match:
                self.caught_up_ms = max(self.caught_up_ms, sent_at)

    def lag_ms(self, now_ms: int, last_index: int) -> int:
        """How far behind our log the follower is in time: 0 if it holds all of it, else
        how long ago our log was no longer than what it holds now (it acked that much)."""
        return 0 if self.match >= last_index else now_ms - self.caught_up_ms

    def ack_bound(self, commit: int) -> int:
        """The highest index a reply may claim: what we sent, or with a snapshot our commit."""
        return max(self.sent_max, commit) if self.snapshot_ordered else self.sent_max

    def acked(self, echo_sent_at_ms: int, fence: int, now_ms: int) -> None:
        """A reply came, echoing the send time of what it answers and the follower's fence."""
        self.last_heard_ms = now_ms
        self.fence = fence
        self.refused = False
        if echo_sent_at_ms < 0:  # NO_HEARTBEAT (coord.core.messages): no round trip to stamp
            return
        if self.acked_sent_at is None or echo_sent_at_ms > self.acked_sent_at:
            self.acked_sent_at = echo_sent_at_ms
        while self.unacked and self.unacked[0] <= echo_sent_at_ms:
            self.unacked.popleft()

    def heard_within(self, now_ms: int, window_ms: int) -> bool:
        """Whether the follower answered in this term within the last window_ms."""
        return self.last_heard_ms is not None and now_ms - self.last_heard_ms < window_ms

    def overdue(self, now_ms: int, lease_ms: int) -> bool:
        """A heartbeat sent at ``s`` is still unanswered at ``s + lease_ms``."""
        return bool(self.unacked) and self.unacked[0] + lease_ms <= now_ms

    def measure_afresh(self) -> None:
        """After a stall of our own, only heartbeats sent from now on may time out."""
        self.unacked.clear()


@dataclass(frozen=True, slots=True)
class Send:
    """What the leader sends one follower now (:func:`to_send`).

    ``append``: an Append goes out, of the entries from ``entries_from`` on
    (as many as one batch holds) or, with ``entries_from`` None, of none (a
    heartbeat, from the follower's ``match``). ``snapshot``: order a snapshot,
    because the entries the follower lacks are compacted away.
    """

    append: bool = False
    entries_from: int | None = None
    snapshot: bool = False


def lacks_entries(progress: Progress, last_index: int, max_inflight: int) -> bool:
    """Whether the follower lacks entries its mode lets us send now (:func:`to_send`'s first
    question, asked alone on every ``has_ready``, so it stays cheap)."""
    return progress.next <= last_index and progress.can_send_entries(max_inflight)


def to_send(
    progress: Progress,
    first_available: int,
    last_index: int,
    max_inflight: int,
    *,
    heartbeat: bool,
) -> Send:
    """The flow-control decision for one follower, over the log's bounds.

    Entries go out when the follower lacks some and its mode lets them
    (one probe at a time, or up to ``max_inflight`` batches in flight); if the
    first it lacks is before ``first_available`` (compacted), a snapshot
    instead. With ``heartbeat`` every follower gets an Append, entries or not.
    """
    lacks = lacks_entries(progress, last_index, max_inflight)
    if lacks and progress.next < first_available:
        return Send(append=heartbeat, snapshot=True)
    if lacks:
        return Send(append=True, entries_from=progress.next)
    return Send(append=heartbeat)
