"""The writes a node handed the shell and has not heard back about: the evidence of a stall.

Every :class:`~coord.core.ready.Ready` whose ``must_sync()`` is true holds back
every message behind it until it is durable. A write slower than
``stall_ms`` is therefore a stall like a paused process: a live node this slow
may have been dropped from the ISR, and its heartbeats and answers left late.
:class:`PendingWrites` keeps, per such Ready, when it was handed out, so the
node can tell a stall the moment a write is late (:meth:`PendingWrites.late`,
PROTOCOL.md rule 4) and when one returns (:meth:`PendingWrites.durable`).
"""

from __future__ import annotations

from collections import deque

__all__ = ["PendingWrites"]


class PendingWrites:
    """Readies handed out that must sync, not yet reported durable, in hand-out order.

    The shell reports each one with :meth:`coord.core.node.Node.synced` (those with
    entries also through ``persisted``).
    """

    def __init__(self, stall_ms: int) -> None:
        self._stall_ms = stall_ms
        self.seq = 0  # the last Ready handed out
        self._pending: deque[tuple[int, int, int | None]] = deque()  # seq, handed at, last index
        self._stall_seen_seq = 0  # Readies up to here already counted in a stall still running

    def next_seq(self) -> int:
        """Number the next Ready handed out."""
        self.seq += 1
        return self.seq

    def track(self, seq: int, handed_ms: int, last_index: int | None) -> None:
        """Ready ``seq`` must sync; ``last_index`` its last entry (None: hard state only)."""
        self._pending.append((seq, handed_ms, last_index))

    def through_index(self, index: int) -> int | None:
        """The last Ready whose entries all end at or before ``index``, if any is pending."""
        done = [seq for seq, _, last in self._pending if last is not None and last <= index]
        return done[-1] if done else None

    def durable(self, seq: int) -> int | None:
        """Readies up to ``seq`` are durable: when the last of them was handed out (None if
        none was pending). Earlier ones a shell did not report were done before it, in order."""
        handed = None
        while self._pending and self._pending[0][0] <= seq:
            handed = self._pending.popleft()[1]
        return handed

    def late(self, now_ms: int) -> bool:
        """Whether the oldest pending write is late by more than ``stall_ms``, once per stall.

        Ticks go on while the write runs, but every message behind it waits,
        heartbeats included (stamped, not sent). Waiting for the write to return
        before calling it a stall lets a leader drop its live followers for the
        silence its own disk caused, and then win an election alone on that
        in-memory ISR while another leads. So the stall counts from the moment
        the write is late, at whatever input comes first.
        """
        for seq, handed, _ in self._pending:
            if seq > self._stall_seen_seq and now_ms - handed > self._stall_ms:
                self._stall_seen_seq = self.seq
                return True
            return False
        return False
