"""The leader's bookkeeping of its followers for one term, as etcd raft's ``tracker``.

A :class:`Tracker` holds each follower's :class:`~coord.core.progress.Progress`
and the peers a snapshot was ordered for; :func:`must_ack` says who must hold
an entry before it commits: the ISR the leader relies on
(:func:`coord.core.commit.relied_isr`) and every member being removed, which
must learn of its removal (PROTOCOL.md). A member being removed is tracked
until it is dead by the ISR rules (let go) or the config that removes it
commits (forgotten). ``tests/core/test_tracker.py`` holds the tables.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from coord.core import commit as commit_rule
from coord.core.config import ClusterConfig, View
from coord.core.entry import EntryKind
from coord.core.log import RaftLog
from coord.core.messages import MAX_INT64
from coord.core.progress import Progress, lacks_entries

__all__ = ["Tracker", "leaving_members", "must_ack", "written_isrs"]


def must_ack(
    isr: Collection[int],
    written: Iterable[Collection[int]],
    tracked: Collection[int],
    members: Collection[int],
) -> frozenset[int]:
    """Who must hold an entry before it commits: the relied-on ISR (``isr`` and every ISR
    ``written`` since the last durable config, of the ``tracked`` nodes, the leader
    included) and the tracked nodes that are no ``members``: those being removed."""
    relied = commit_rule.relied_isr(isr, written, tracked)
    return relied | frozenset(i for i in tracked if i not in members)


def written_isrs(view: View, log: RaftLog) -> list[frozenset[int]]:
    """The ISRs of the last durable config and of every config written after it, when
    the view is not durable yet (nothing when it is)."""
    stable = log.stable_last
    if view.epoch <= stable:
        return []
    durable = log.last_config(stable)
    configs = [durable] if durable is not None else []
    configs += [
        e
        for e in log.entries(stable + 1, log.last_index() + 1, MAX_INT64) or ()
        if e.kind is EntryKind.CONFIG
    ]
    return [ClusterConfig.decode(entry.payload).isr for entry in configs]


def leaving_members(view: View, log: RaftLog, commit: int) -> set[int]:
    """Members being removed: in the latest committed config, not in the view.

    A removal commits only once the removed member holds it (or is dead by
    the ISR rules), so that it learns it was removed (PROTOCOL.md).
    """
    committed = log.last_config(commit) if view.epoch > commit else None
    if committed is None:
        return set()
    return set(ClusterConfig.decode(committed.payload).member_ids) - set(view.config.member_ids)


class Tracker:
    """The followers' progress under one leader's term; empty on every other node."""

    def __init__(self) -> None:
        self.progress: dict[int, Progress] = {}
        # Peers a snapshot was ordered for in this term, under any bookkeeping:
        # a member removed and re-added may still answer an earlier order.
        self.snapshot_peers: set[int] = set()

    def start_term(self, peers: Iterable[int], next_index: int, now_ms: int) -> None:
        """A new leader's bookkeeping: each peer probed from ``next_index``."""
        self.snapshot_peers = set()
        self.progress = {i: Progress(next_index, now_ms) for i in sorted(peers)}

    def track(self, members: Iterable[int], next_index: int, now_ms: int) -> None:
        """Start tracking the ``members`` not tracked yet (added to the view)."""
        for member in members:
            if member not in self.progress:
                self.progress[member] = Progress(next_index, now_ms)

    def let_go(self, peer: int, members: Collection[int]) -> bool:
        """A peer is dead (refused connection, or a heartbeat unanswered for a lease): if
        it is being removed, stop waiting for it, as the ISR rules stop waiting for a
        dead member. True if it was let go."""
        if peer in self.progress and peer not in members:
            del self.progress[peer]
            return True
        return False

    def forget_departed(self, members: Collection[int]) -> None:
        """Stop tracking the peers no longer in the view (see
        :func:`coord.core.commit.departed_forgotten`)."""
        for peer in [i for i in self.progress if i not in members]:
            del self.progress[peer]

    def matches(self, own_id: int, own_stable: int) -> dict[int, int]:
        """What each node holds durably, the leader's own fsynced entries included."""
        matches = {peer: progress.match for peer, progress in self.progress.items()}
        matches[own_id] = own_stable
        return matches

    def lacks_entries(self, last_index: int, max_inflight: int) -> bool:
        return any(lacks_entries(p, last_index, max_inflight) for p in self.progress.values())

    def lags(self, now_ms: int, last_index: int) -> dict[int, tuple[int, int]]:
        """Each follower's distance behind the leader's log, in entries and in ms
        (:meth:`coord.core.progress.Progress.lag_ms`)."""
        return {
            peer: (max(0, last_index - progress.match), progress.lag_ms(now_ms, last_index))
            for peer, progress in self.progress.items()
        }
