"""What a node will hand out in its next :class:`~coord.core.ready.Ready`, as it accumulates.

etcd raft's ``rawnode.go`` in small: between two ``ready()`` calls the node's
handlers add to :class:`Outputs` (messages, snapshot orders, a snapshot to
install, election results, soft-state changes); the entries to persist and the
committed entries are read off the log when the Ready is taken, and the hard
state is handed out only when it differs from the one handed out last. So the
node's own handlers say what happened, and this module alone says what a Ready
is made of.
"""

from __future__ import annotations

from dataclasses import replace

from coord.core.entry import Entry
from coord.core.errors import LocalProtocolError
from coord.core.log import HardState, RaftLog, SnapshotMeta
from coord.core.messages import Message, VoteReply
from coord.core.ready import ElectionResult, Ready, SnapshotOrder, SoftState

__all__ = ["Outputs"]


class Outputs:
    """The accumulator behind :meth:`coord.core.node.Node.ready` and ``has_ready``.

    ``handed_hard_state`` is what the storage holds (or will, once the last
    Ready is written), ``committed_out`` the last committed index handed out
    (or covered by a snapshot), ``soft_state`` the soft state published last.
    """

    def __init__(
        self,
        log: RaftLog,
        handed_hard_state: HardState,
        committed_out: int,
        soft_state: SoftState,
        max_batch_bytes: int,
    ) -> None:
        self._log = log
        self._max_batch_bytes = max_batch_bytes
        self._handed_hard_state = handed_hard_state
        self._committed_out = committed_out
        self._soft_state = soft_state
        self._soft_state_changed = False
        self.messages: list[tuple[int, Message]] = []
        self.snapshot_orders: list[SnapshotOrder] = []
        self.elections: list[ElectionResult] = []
        self.install: SnapshotMeta | None = None

    # -- what the handlers add ---------------------------------------------------

    def send(self, to: int, msg: Message) -> None:
        self.messages.append((to, msg))

    def order_snapshot(self, order: SnapshotOrder) -> None:
        self.snapshot_orders.append(order)

    def report_election(self, result: ElectionResult) -> None:
        self.elections.append(result)

    def install_snapshot(self, meta: SnapshotMeta) -> None:
        """Install ``meta``: the entries it covers are applied by the install, never handed out."""
        self.install = meta
        self._committed_out = meta.index

    def note_soft_state(self, current: SoftState) -> None:
        """Publish ``current`` in the next Ready, if it is news."""
        if current != self._soft_state:
            self._soft_state = current
            self._soft_state_changed = True

    def restate_vote_replies_restarted(self) -> None:
        """A stall happened: vote replies queued before it leave after it, so they say so."""
        self.messages = [
            (to, replace(m, restarted=True)) if isinstance(m, VoteReply) else (to, m)
            for to, m in self.messages
        ]

    # -- what the node hands out -----------------------------------------------

    def pending(self, hard_state: HardState, commit: int) -> bool:
        """Whether a Ready taken now would hold anything (the leader's unsent entries aside)."""
        return bool(
            self.messages
            or self.snapshot_orders
            or self.install is not None
            or self._log.has_unpersisted()
            or hard_state != self._handed_hard_state
            or self._committed_out < min(commit, self._log.stable_last)
            or self._soft_state_changed
            or self.elections
        )

    def take(self, hard_state: HardState, commit: int, seq: int) -> Ready:
        """Everything accumulated, as Ready number ``seq``; the accumulator starts afresh."""
        ready = Ready(
            hard_state=hard_state if hard_state != self._handed_hard_state else None,
            install_snapshot=self.install,
            entries=self._log.take_unpersisted(),
            messages=tuple(self.messages),
            snapshots=tuple(self.snapshot_orders),
            committed=self._take_committed(commit),
            soft_state=self._soft_state if self._soft_state_changed else None,
            elections=tuple(self.elections),
            seq=seq,
        )
        self._handed_hard_state = hard_state
        self.install = None
        self.messages.clear()
        self.snapshot_orders.clear()
        self.elections.clear()
        self._soft_state_changed = False
        return ready

    def _take_committed(self, commit: int) -> tuple[Entry, ...]:
        """Committed entries not handed out yet, only once durable here, one batch at a time."""
        high = min(commit, self._log.stable_last)
        if self._committed_out >= high:
            return ()
        batch = self._log.entries(self._committed_out + 1, high + 1, self._max_batch_bytes)
        if not batch:
            raise LocalProtocolError(
                f"committed entries after {self._committed_out} were compacted"
            )
        self._committed_out = batch[-1].index
        return tuple(batch)
