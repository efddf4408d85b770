"""What a :class:`~coord.core.node.Node` does while it leads: replicate, count acks, commit.

The leader sends each follower what it lacks (:func:`coord.core.progress.to_send`),
keeps their progress (:mod:`coord.core.tracker`), commits by the commit rule
(:mod:`coord.core.commit`), shrinks and grows the ISR, holds the leader lease
(:mod:`coord.core.lease`), orders snapshots and hands leadership over
(:mod:`coord.core.transfer`). The rules are the pure modules'; this is the
leader's half of the node that carries them out, mixed into
:class:`~coord.core.node.Node`, whose state it shares.
"""

from __future__ import annotations

from coord.core import commit as commit_rule
from coord.core.config import ClusterConfig, View
from coord.core.entry import Entry, EntryKind
from coord.core.errors import Redirect
from coord.core.lease import leader_lease_holds, quorum_heard
from coord.core.log import NO_NODE
from coord.core.messages import NO_HEARTBEAT, Append, AppendReply, Message, TimeoutNow
from coord.core.progress import Mode, Progress, Send, to_send
from coord.core.ready import SnapshotOrder
from coord.core.roles import NodeFields, Role
from coord.core.tracker import leaving_members, must_ack, written_isrs
from coord.core.transfer import target_caught_up


class Leading(NodeFields):
    """The leader's side of :class:`~coord.core.node.Node`; the state is the node's."""

    def _step_leader(self, msg: Message, now_ms: int) -> None:
        """A leader of this term hears only its followers' answers."""
        if isinstance(msg, AppendReply):
            self._on_append_reply(msg, now_ms)

    def has_lease(self, now_ms: int) -> bool:
        """Whether this node leads and no other node can lead before ``now_ms`` ends."""
        if self.role is not Role.LEADER:
            return False
        config = self._view().config
        others = [i for i in config.member_ids if i != self.id]
        relied = self._relied_isr()
        isr_acks = [self._tracker.progress[i].acked_sent_at for i in others if i in relied]
        member_acks = [self._tracker.progress[i].acked_sent_at for i in others]
        needed = config.majority - 1 if config.quorum_mode else 0
        return leader_lease_holds(
            now_ms, isr_acks, member_acks, needed, self.settings.leader_lease_ms
        )

    def follower_lags(self, now_ms: int) -> dict[int, tuple[int, int]]:
        """On a leader, each follower's distance behind its log, in entries and in ms
        (:meth:`coord.core.progress.Progress.lag_ms`); nothing on other nodes."""
        if self.role is not Role.LEADER:
            return {}
        return self._tracker.lags(now_ms, self.log.last_index())

    def _tick_leader(self, now_ms: int) -> None:
        if self._lost_quorum(now_ms):
            self._become_follower(self.term, NO_NODE)
            return
        if self._transfer_to != NO_NODE and now_ms >= self._transfer_deadline_ms:
            self._transfer_to = NO_NODE
        for peer, progress in list(self._tracker.progress.items()):
            if progress.overdue(now_ms, self.settings.lease_ms):
                self._drop_from_isr(peer)
                self._maybe_let_go(peer)
            if peer not in self._tracker.progress:
                continue
            if progress.stalled(now_ms, self.log.last_index(), self.settings.resend_ms):
                progress.restart_probe(progress.match + 1, now_ms)
            if progress.snapshot_overdue(now_ms, self.settings.lease_ms):
                self._order_snapshot(peer, progress, now_ms)
        if now_ms - self._last_broadcast_ms >= self.settings.heartbeat_ms:
            self._last_broadcast_ms = now_ms
            self._replicate(now_ms, heartbeat=True)

    def _lost_quorum(self, now_ms: int) -> bool:
        """Quorum mode: no majority heard from us within a lease (lease.quorum_heard).
        Fail-stop mode has no such rule: its leader may go on with an ISR of itself."""
        config = self._view().config
        if not config.quorum_mode or now_ms - self._term_started_ms < self.settings.lease_ms:
            return False
        others = [self._heard_ms.get(i) for i in config.member_ids if i != self.id]
        return not quorum_heard(now_ms, others, config.majority - 1, self.settings.lease_ms)

    def _become_leader(self, isr: frozenset[int], now_ms: int) -> None:
        """Won: append ``noop`` then ``config(ISR* ∩ R)``, and start replicating."""
        self.role = Role.LEADER
        self._ballot = None
        self._election_at = None
        self._lease.void()
        self._set_leader(self.id)
        next_index = self.log.last_index() + 1
        view = self._view()
        peers = {*view.config.member_ids, *leaving_members(view, self.log, self.commit)}
        self._tracker.start_term(peers - {self.id}, next_index, now_ms)
        self._last_broadcast_ms = now_ms
        self._term_started_ms = now_ms
        self._term_start = self._append_as_leader(EntryKind.NOOP, b"").index
        self._append_config(self._view().config.with_isr(isr))
        self._replicate(now_ms, heartbeat=True)

    def _require_leader(self) -> None:
        if self.role is not Role.LEADER:
            raise Redirect(self.leader_id)
        if self._transfer_to != NO_NODE:
            raise Redirect(self._transfer_to, "leadership is being transferred")

    def _append_as_leader(self, kind: EntryKind, payload: bytes) -> Entry:
        entry = Entry(self.log.last_index() + 1, self.term, kind, payload)
        self.log.append([entry])
        return entry

    def _append_config(self, config: ClusterConfig) -> Entry:
        """Append a config entry; it is our view at once, committed or not."""
        entry = self._append_as_leader(EntryKind.CONFIG, config.encode())
        self.view = View.of(entry)
        others = (i for i in config.member_ids if i != self.id)
        self._tracker.track(others, self.log.last_index(), self._now_ms)
        if self.id in config.isr:
            self.restarted = False
        self._maybe_commit()
        return entry

    def _drop_from_isr(self, peer: int) -> None:
        config = self._view().config
        isr = commit_rule.isr_after_silence(config.isr, peer, config.min_insync)
        if isr is not None:
            self._append_config(config.with_isr(isr))

    def _maybe_grow_isr(self, peer: int) -> None:
        progress = self._tracker.progress.get(peer)
        if progress is None:
            return  # a leaving member, forgotten once its removal committed
        config = self._view().config
        match, commit = progress.match, self.commit
        isr = commit_rule.isr_after_catch_up(config.member_ids, config.isr, peer, match, commit)
        if isr is not None:
            self._append_config(config.with_isr(isr))

    def _relied_isr(self) -> frozenset[int]:
        """:func:`coord.core.commit.relied_isr` over the ISRs written since the last
        durable config (:func:`coord.core.tracker.written_isrs`)."""
        view = self._view()
        tracked = {self.id, *self._tracker.progress}
        return commit_rule.relied_isr(view.config.isr, written_isrs(view, self.log), tracked)

    def _maybe_commit(self) -> None:
        """Apply the commit rule (:mod:`coord.core.commit`) to what the followers acked."""
        view = self._view()
        config = view.config
        matches = self._tracker.matches(self.id, self.log.stable_last)
        written = written_isrs(view, self.log)
        required = must_ack(config.isr, written, {self.id, *matches}, config.member_ids)
        index = commit_rule.commit_candidate(matches, required, len(config.isr), config.min_insync)
        term = self.log.term(index) if index is not None else None
        if commit_rule.may_commit(index, self.commit, term, self.term):
            self.commit = index
        if commit_rule.departed_forgotten(view.epoch, self.commit):
            self._tracker.forget_departed(config.member_ids)

    def _maybe_let_go(self, peer: int) -> None:
        if self._tracker.let_go(peer, self._view().config.member_ids):
            self._maybe_commit()

    def _on_append_reply(self, msg: AppendReply, now_ms: int) -> None:
        progress = self._tracker.progress.get(msg.sender)
        if progress is None:
            return
        if 0 <= msg.echo_sent_at_ms < progress.created_ms:
            return  # answers an Append sent before this term's bookkeeping began
        if msg.echo_sent_at_ms == NO_HEARTBEAT and msg.success and not progress.snapshot_ordered:
            return  # answers a snapshot ordered under an earlier bookkeeping (re-added)
        progress.acked(msg.echo_sent_at_ms, msg.fence, now_ms)
        if progress.mode is Mode.SNAPSHOT and not progress.snapshot_ordered:
            self._order_snapshot(msg.sender, progress, now_ms)
        if msg.success:
            if progress.update(msg.match_index, self.log.snapshot.index, now_ms):
                self._maybe_commit()
                self._maybe_grow_isr(msg.sender)
                self._maybe_finish_transfer(now_ms)
            progress.caught_up(msg.echo_sent_at_ms)
        else:
            progress.reject(msg.reject_index, msg.hint_index, now_ms)

    def _has_unsent_entries(self) -> bool:
        return self._tracker.lacks_entries(
            self.log.last_index(), self.settings.max_inflight_batches
        )

    def _to_send(self, progress: Progress, *, heartbeat: bool) -> Send:
        first, last = self.log.first_available(), self.log.last_index()
        inflight = self.settings.max_inflight_batches
        return to_send(progress, first, last, inflight, heartbeat=heartbeat)

    def _replicate(self, now_ms: int, *, heartbeat: bool) -> None:
        """Send each follower what it lacks; with ``heartbeat``, send everyone something."""
        for peer in sorted(self._tracker.progress):
            self._send_append(peer, self._tracker.progress[peer], now_ms, heartbeat=heartbeat)

    def _send_append(self, peer: int, progress: Progress, now_ms: int, *, heartbeat: bool) -> None:
        """Carry out :func:`coord.core.progress.to_send` for ``peer``."""
        send = self._to_send(progress, heartbeat=heartbeat)
        if send.snapshot:
            self._order_snapshot(peer, progress, now_ms)
        if not send.append:
            return
        entries: list[Entry] = []
        prev_index = progress.match
        if send.entries_from is not None:
            batch = self.log.entries(
                send.entries_from, self.log.last_index() + 1, self.settings.max_batch_bytes
            )
            assert batch, "to_send offers only entries the log holds"
            entries, prev_index = batch, send.entries_from - 1
            progress.sent_entries(entries[-1].index, now_ms)
        prev_term = self.log.term(prev_index)
        if prev_term is None:
            prev_index, prev_term = self.log.snapshot.index, self.log.snapshot.term
        view = self._view()
        self._outputs.send(
            peer,
            Append(
                term=self.term,
                sender=self.id,
                prev_index=prev_index,
                prev_term=prev_term,
                entries=tuple(entries),
                commit=self.commit,
                epoch=view.epoch,
                isr=tuple(sorted(view.config.isr)),
                sent_at_ms=now_ms,
                fence=progress.fence,
            ),
        )
        progress.append_sent(now_ms, prev_index + len(entries), self.log.last_index())

    def _order_snapshot(self, peer: int, progress: Progress, now_ms: int) -> None:
        """Stream a snapshot, once the follower has answered us in this term, within a lease.

        Only then does it follow us, and a follower accepts a snapshot only from
        the leader it follows (:func:`coord.core.checks.check_install_snapshot`); until then the
        heartbeats make it follow, and its first answer sends the order. And a
        snapshot costs the leader a copy of its whole state: a follower silent for a
        lease (down, or cut off) could not take it, so it gets none until it
        answers again, as etcd's raft skips followers that are not recently active.
        """
        progress.need_snapshot(now_ms)
        if progress.heard_within(now_ms, self.settings.lease_ms):
            progress.snapshot_ordered = True
            self._tracker.snapshot_peers.add(peer)
            self._outputs.order_snapshot(SnapshotOrder(peer, self.term))

    def _maybe_finish_transfer(self, now_ms: int) -> None:
        progress = self._tracker.progress.get(self._transfer_to)
        if not target_caught_up(progress.match if progress else None, self.log.last_index()):
            return
        target = self._transfer_to
        self._outputs.send(target, TimeoutNow(self.term, self.id))
        self._become_follower(self.term, NO_NODE)
        self._lease.grant(self.id, now_ms, self.settings.lease_ms)
