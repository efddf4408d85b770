"""What a :class:`~coord.core.node.Node` does while it follows: take its leader's word.

A follower hears its leader only: entries, which it appends where they connect
(:func:`coord.core.append.accept_append`) and acks, a snapshot to install
(:func:`coord.core.append.installs_snapshot`), and the order to campaign at
once (:func:`coord.core.transfer.obeys_timeout_now`). Once it durably holds a
config that has it in the ISR it stops calling itself ``restarted``. The
rules are the pure modules'; this is the follower's half of the node that
carries them out, mixed into :class:`~coord.core.node.Node`, whose state it
shares.
"""

from __future__ import annotations

from coord.core.append import accept_append, installs_snapshot, view_after_write
from coord.core.config import View
from coord.core.entry import Entry
from coord.core.log import SnapshotMeta
from coord.core.messages import (
    NO_HEARTBEAT,
    Append,
    AppendReply,
    InstallSnapshot,
    Message,
    TimeoutNow,
)
from coord.core.roles import NodeFields
from coord.core.transfer import obeys_timeout_now


class Following(NodeFields):
    """The follower's side of :class:`~coord.core.node.Node`; the state is the node's."""

    def _step_follower(self, msg: Message, now_ms: int) -> None:
        """A follower hears its leader: entries, a snapshot, the order to campaign."""
        match msg:
            case Append():
                self._on_append(msg)
            case InstallSnapshot() if msg.sender == self.leader_id:
                self._on_install_snapshot(msg, now_ms)
            case TimeoutNow():
                self._on_timeout_now(msg, now_ms)

    def _on_append(self, msg: Append) -> None:
        accepted = accept_append(msg, self.commit, self.log.term)
        if accepted is None:
            hint = self.log.find_conflict_by_term(
                min(msg.prev_index, self.log.last_index()), msg.prev_term
            )
            self._reply_append(msg, False, 0, msg.prev_index, hint)
            return
        if accepted.suffix:
            cut = self.log.append(accepted.suffix)
            self._refresh_view(cut, accepted.suffix)
        self.commit = accepted.commit
        if self.id in msg.isr and msg.epoch <= accepted.match and msg.fence == self._fence:
            self._restart_clear_epoch = msg.epoch
            self._maybe_clear_restarted()
        self._reply_append(msg, True, accepted.match, 0, 0)

    def _refresh_view(self, cut: int | None, appended: tuple[Entry, ...]) -> None:
        """Our view after writing ``appended`` (cut at ``cut``, if it replaced a suffix)."""
        if cut is not None and (self._restart_clear_epoch or 0) >= cut:
            self._restart_clear_epoch = None  # the config that would clear it was cut
        self.view = view_after_write(self.view, cut, appended, self.log.last_config)
        self._note_soft_state()  # "removed" may have come or gone

    def _maybe_clear_restarted(self) -> None:
        """Clear ``restarted`` once we durably hold a config that has us in the ISR."""
        epoch = self._restart_clear_epoch
        if epoch is not None and epoch <= self.log.stable_last:
            self.restarted = False
            self._restart_clear_epoch = None

    def _reply_append(
        self, msg: Append, success: bool, match: int, reject_index: int, hint: int
    ) -> None:
        reply = AppendReply(
            term=self.term,
            sender=self.id,
            success=success,
            match_index=match,
            reject_index=reject_index,
            hint_index=hint,
            echo_sent_at_ms=msg.sent_at_ms,
            fence=self._fence,
        )
        self._outputs.send(msg.sender, reply)

    def _on_install_snapshot(self, msg: InstallSnapshot, now_ms: int) -> None:
        """From the leader we follow (from our term's leader while we follow nobody, the
        order is dropped: it orders again)."""
        self._follow(msg.term, msg.sender, now_ms)
        if installs_snapshot(msg.index, msg.index_term, self.commit, self.log.term):
            meta = SnapshotMeta(msg.index, msg.index_term, msg.config)
            self.log.install(meta)
            self._outputs.install_snapshot(meta)
            self.view = View.of(msg.config)
            self._note_soft_state()
        self.commit = max(self.commit, msg.index)
        reply = AppendReply(self.term, self.id, True, self.commit, 0, 0, NO_HEARTBEAT, self._fence)
        self._outputs.send(msg.sender, reply)

    def _on_timeout_now(self, msg: TimeoutNow, now_ms: int) -> None:
        if obeys_timeout_now(msg, self.term, self.leader_id, may_campaign=not self._cannot_lead()):
            self._campaign(now_ms, pre_vote=False, transfer_from=msg.sender)
