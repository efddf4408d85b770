"""The protocol core: one :class:`Node` per replica, sans-IO, driven like etcd raft's ``RawNode``.

Inputs are method calls carrying the time (integer ms of the node's monotonic
clock): :meth:`Node.tick`, :meth:`Node.receive`, :meth:`Node.propose`,
:meth:`Node.persisted`, :meth:`Node.peer_unreachable`, the operator's
:meth:`Node.transfer_leadership`, :meth:`Node.force_leader`,
:meth:`Node.propose_config_change`, and the tests' :meth:`Node.campaign`.
Outputs accumulate (:mod:`coord.core.outputs`) until the shell drains them
with :meth:`Node.ready` (see :mod:`coord.core.ready` for what the shell must
do with each :class:`~coord.core.ready.Ready`, in which order). Proposals made between
two ``ready()`` calls share one batch, one fsync and one message per follower.

Stalls: every input's ``now_ms`` is compared with the previous input's. A gap
longer than two heartbeats makes a leader measure its followers afresh (only
heartbeats it sends from now on can time out), whatever input came first, so
the shell may deliver the messages that queued up during the stall before or
after the first tick. A gap longer than ``stall_ms`` sets ``restarted`` and
makes a leader or candidate step down (see :class:`coord.core.settings.Settings`).
"""

from __future__ import annotations

import enum
import random

from coord.core import checks
from coord.core import commit as commit_rule
from coord.core.append import accept_append, installs_snapshot, view_after_write
from coord.core.config import AddMember, ClusterConfig, ConfigChange, View, config_entry
from coord.core.election import (
    Ballot,
    Outcome,
    Trigger,
    election_delay,
    grants,
    may_win_on,
    outranks,
)
from coord.core.entry import Entry, EntryKind
from coord.core.errors import ChangeInFlight, LocalProtocolError, Redirect, RemoteProtocolError
from coord.core.inspection import BallotState, NodeState, PeerState
from coord.core.lease import FollowerLease, leader_lease_holds, quorum_heard
from coord.core.log import NO_NODE, HardState, RaftLog, SnapshotMeta, Storage
from coord.core.messages import (
    MAX_INT64,
    NO_HEARTBEAT,
    Append,
    AppendReply,
    InstallSnapshot,
    Message,
    TimeoutNow,
    VoteReply,
    VoteRequest,
    check_shape,
)
from coord.core.outputs import Outputs
from coord.core.progress import Mode, Progress, Send, to_send
from coord.core.ready import ElectionResult, Ready, SnapshotOrder, SoftState
from coord.core.settings import Settings
from coord.core.status import Status, member_status
from coord.core.tracker import Tracker, leaving_members, must_ack, written_isrs
from coord.core.transfer import may_transfer_to, obeys_timeout_now, target_caught_up
from coord.core.writes import PendingWrites


class Role(enum.StrEnum):
    """``REMOVED`` is never :attr:`Node.role`, only what status reports for a follower
    whose view does not include it (:attr:`Node.removed`)."""

    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    LEADER = "leader"
    REMOVED = "removed"


class Node:
    """One replica's protocol state machine. Deterministic: same inputs, same outputs.

    ``storage`` is what the shell made durable; ``applied`` the last index its
    state machine applied (everything up to it is committed). ``bootstrap`` is
    the initial config of a brand-new cluster, written as entry 1 (term 0) on
    every initial member alike; a node added later starts with ``None`` and an
    empty log and waits for the leader.

    The rules themselves live in pure modules (:mod:`coord.core.election`,
    :mod:`coord.core.commit`, :mod:`coord.core.checks`, :mod:`coord.core.lease`,
    :mod:`coord.core.progress`, :mod:`coord.core.append`,
    :mod:`coord.core.transfer`), and what it hands out accumulates in
    :class:`~coord.core.outputs.Outputs`; the node holds the role state the
    rules are applied to and dispatches each input to them.
    """

    def __init__(
        self,
        node_id: int,
        storage: Storage,
        settings: Settings,
        rng: random.Random,
        now_ms: int,
        *,
        applied: int = 0,
        bootstrap: ClusterConfig | None = None,
    ) -> None:
        if node_id <= 0:
            raise LocalProtocolError("node ids are positive")
        self.id = node_id
        self.settings = settings
        self._rng = rng
        self.log = RaftLog(storage, settings.cached_entries)
        hard_state = storage.hard_state()
        self.term = hard_state.term
        self.voted_for = hard_state.voted_for
        self.role = Role.FOLLOWER
        self.leader_id = NO_NODE
        # The node whose Append we took in the current term: proof of who leads it
        # (leader_id may be a hint from vote replies, of an earlier term even).
        self._term_leader = NO_NODE
        self.restarted = True
        self._lease = FollowerLease(NO_NODE, now_ms + settings.lease_ms)
        self._last_input_ms = now_ms
        self._now_ms = now_ms
        self._election_at: int | None = None
        self._ballot: Ballot | None = None
        self._tracker = Tracker()
        # Candidates whose pre-vote we yielded to and that have sent no real vote
        # since: a candidate whose pre-votes keep failing gets no second yield.
        self._yielded_to: set[int] = set()
        self._term_start = 0
        self._term_started_ms = now_ms
        self._last_broadcast_ms = now_ms
        self._transfer_to = NO_NODE
        self._transfer_deadline_ms = 0
        self._restart_clear_epoch: int | None = None
        self._fence = rng.getrandbits(32)
        # When each peer last spoke to us (any message we took), on our clock.
        self._heard_ms: dict[int, int] = {}
        # Leaders seen alive (an Append from them, a voter's live lease on them):
        # leader id -> until when (our clock) one of them may still hold a lease.
        self._leaders_seen: dict[int, int] = {}
        # Readies handed out that must sync, not yet reported durable:
        # (seq, handed out at, last entry index or None).
        self._writes = PendingWrites(settings.stall_ms)
        self._lost_ballots = 0  # in a row: candidates that keep colliding back off
        self.commit = max(applied, self.log.snapshot.index)
        committed_out = self.commit  # the caller applied these; a bootstrap entry it has not
        if bootstrap is not None and self.log.last_index() == 0:
            self.log.append([config_entry(1, 0, bootstrap)])
            self.commit = 1
        last_config = self.log.last_config(self.log.last_index())
        self.view = View.of(last_config) if last_config else None
        if self.view is not None and self.view.config.member_ids == (self.id,):
            self._lease.void()  # a cluster of one: no other leader can count on our promise
        self._outputs = Outputs(
            self.log,
            hard_state,
            committed_out,
            self._current_soft_state(),
            settings.max_batch_bytes,
        )

    # == inputs ==================================================================

    def tick(self, now_ms: int) -> None:
        """Time passes. The shell calls this at least every ``heartbeat_ms``."""
        self._advance(now_ms)
        if self.role is Role.LEADER:
            self._tick_leader(now_ms)
        elif self.role is Role.CANDIDATE:
            if self._ballot is not None and now_ms >= self._ballot.deadline_ms:
                self._judge(Trigger.DEADLINE, now_ms)
        else:
            self._tick_follower(now_ms)

    def receive(self, msg: Message, now_ms: int) -> None:
        """A message from a peer arrived. Raises :class:`RemoteProtocolError` on nonsense.

        Every field is checked before anything changes, the clock included: a
        refused message leaves the node exactly as it was ("not applied").
        """
        self._check(msg)
        self._advance(now_ms)
        self._note_heard(msg, now_ms)
        if isinstance(msg, VoteRequest):
            self._on_vote_request(msg, now_ms)  # whether it moves our term depends on leases
            return
        if self._settle_term(msg, now_ms):
            return
        if self.role is Role.LEADER:
            self._step_leader(msg, now_ms)
        elif self.role is Role.CANDIDATE:
            self._step_candidate(msg, now_ms)
        else:
            self._step_follower(msg, now_ms)

    def _settle_term(self, msg: Message, now_ms: int) -> bool:
        """The term rule, once for every message but a vote request; True if it handled ``msg``.

        A reply from a node with no say (being removed) is dropped, term and
        all. A newer term in a reply makes us a follower, and that is all it
        says. A message of an older term is refused (an Append or a snapshot,
        so that its stale leader learns our term) or dropped, except a vote
        reply: a pre-vote moves nobody's term, and a voter whose lease blocks
        our term keeps its own, so its answer counts in the ballot whatever
        its term. An Append of our term or a newer one makes us follow its
        sender, whatever our role.
        """
        if isinstance(msg, AppendReply | VoteReply):
            if self._from_outsider(msg):
                return True
            if msg.term > self.term:
                self._become_follower(msg.term, NO_NODE)
                return True
        if msg.term < self.term and not isinstance(msg, VoteReply):
            if isinstance(msg, Append):
                self._reply_append(msg, False, 0, msg.prev_index, self.log.last_index())
            elif isinstance(msg, InstallSnapshot):
                refusal = AppendReply(self.term, self.id, False, 0, 0, 0, NO_HEARTBEAT, self._fence)
                self._outputs.send(msg.sender, refusal)
            return True
        if isinstance(msg, Append):
            self._follow(msg.term, msg.sender, now_ms)
        return False

    def _step_leader(self, msg: Message, now_ms: int) -> None:
        """A leader of this term hears only its followers' answers."""
        if isinstance(msg, AppendReply):
            self._on_append_reply(msg, now_ms)

    def _step_candidate(self, msg: Message, now_ms: int) -> None:
        """A candidate hears only its voters: it follows nobody yet (an Append made us
        a follower before this)."""
        if isinstance(msg, VoteReply):
            self._on_vote_reply(msg, now_ms)

    def _step_follower(self, msg: Message, now_ms: int) -> None:
        """A follower hears its leader: entries, a snapshot, the order to campaign."""
        match msg:
            case Append():
                self._on_append(msg)
            case InstallSnapshot() if msg.sender == self.leader_id:
                self._on_install_snapshot(msg, now_ms)
            case TimeoutNow():
                self._on_timeout_now(msg, now_ms)

    def propose(self, payload: bytes, now_ms: int) -> tuple[int, int]:
        """Append an op; returns ``(index, term)``. It counts once committed at that index+term."""
        self._advance(now_ms)
        self._require_leader()
        entry = self._append_as_leader(EntryKind.OP, payload)
        return entry.index, entry.term

    def propose_config_change(self, change: ConfigChange, now_ms: int) -> tuple[int, int]:
        """Add or remove one member. One change at a time: the previous must be committed."""
        self._advance(now_ms)
        self._require_leader()
        view = self._view()
        # A change that can never be made is refused as such, in flight or not.
        if isinstance(change, AddMember):
            config = view.config.with_member(change.node_id, change.address)
        elif change.node_id == self.id:
            raise LocalProtocolError("the leader cannot remove itself: transfer leadership first")
        else:
            config = view.config.without_member(change.node_id)
        if view.epoch > self.commit:
            raise ChangeInFlight(f"config of epoch {view.epoch} is not committed yet")
        entry = self._append_config(config)
        return entry.index, entry.term

    def persisted(self, index: int, term: int, now_ms: int) -> None:
        """The shell made entries up to ``(index, term)`` and the hard state before them durable."""
        self._advance(now_ms)
        done = self._writes.through_index(index)
        if done is not None:
            self._synced_upto(done, now_ms)  # a slow write steps a leader down first
        if not self.log.stable_to(index, term):
            return
        self._maybe_clear_restarted()
        if self.role is Role.LEADER:
            self._maybe_commit()

    def synced(self, ready: Ready, now_ms: int) -> None:
        """The fsync of ``ready`` (one whose ``must_sync()`` is true) returned.

        Call it right after the fsync, before the Ready's later messages leave,
        for every Ready that had something to write, entries or not (with
        entries, ``persisted`` says the same; calling both is fine). It tells
        the core two things ``persisted`` cannot for a Ready of hard state only:
        when a candidate's vote requests really left (its voters' silence counts
        from there), and how long the write took: a Ready that took longer than
        ``stall_ms`` from hand-out to here held back every message behind it, so
        it counts as a stall (PROTOCOL.md, "Why fail-stop elections are safe").
        """
        self._advance(now_ms)
        self._writes.reports_syncs = True
        self._synced_upto(ready.seq, now_ms)

    def peer_unreachable(self, peer_id: int, now_ms: int) -> None:
        """Connecting to ``peer_id`` was refused: no process serves there, it cannot answer."""
        self._advance(now_ms)
        self._leaders_seen.pop(peer_id, None)  # whatever lease it held died with it
        if self.role is Role.LEADER:
            progress = self._tracker.progress.get(peer_id)
            if progress is not None:
                progress.refused = True
                self._drop_from_isr(peer_id)
                self._maybe_let_go(peer_id)
        elif self.role is Role.CANDIDATE and self._ballot is not None:
            self._ballot.unreachable.add(peer_id)
            self._judge(Trigger.CHANGE, now_ms)
        elif peer_id == self.leader_id or peer_id == self._lease.leader_id:
            self._lease.void()
            self._set_leader(NO_NODE)
            if not self._cannot_lead():
                # The leader is known dead, not merely silent: no reason to wait long,
                # only to stagger the candidates (within one heartbeat, lower ids first,
                # the dead leader taking no slot).
                window = self.settings.heartbeat_ms
                delay = self._election_delay(self.view.config, window, dead=peer_id)
                self._election_at = now_ms + delay

    def transfer_leadership(self, target_id: int, now_ms: int) -> None:
        """Hand leadership to an in-sync follower once it holds our whole log (TimeoutNow)."""
        self._advance(now_ms)
        self._require_leader()
        if not may_transfer_to(target_id, self.id, self._view().config.isr):
            raise LocalProtocolError(f"node {target_id} is not an in-sync follower")
        self._transfer_to = target_id
        self._transfer_deadline_ms = now_ms + self.settings.lease_ms
        self._maybe_finish_transfer(now_ms)

    def force_leader(self, now_ms: int) -> None:
        """Operator's way out (``--accept-data-loss``): lead now with an ISR of this node alone.

        Entries committed by an ISR this node was not part of are lost. Refused
        while this node holds a live lease on another leader: that one is alive.
        """
        self._advance(now_ms)
        if self.role is Role.LEADER:
            raise LocalProtocolError("this node already leads")
        if self._lease.live(now_ms):
            if self._lease.leader_id != NO_NODE:
                raise LocalProtocolError(f"node {self._lease.leader_id} leads and is alive")
            raise LocalProtocolError(
                "this node started less than a lease ago: a leader may still count on the "
                "promise its previous life made; retry once the lease has run out"
            )
        alive = sorted(i for i, until in self._leaders_seen.items() if now_ms < until)
        if alive:
            raise LocalProtocolError(
                f"node {alive[0]} was seen leading within a lease: it may hold a lease still"
            )
        if self.view is None or self.id not in self.view.config.member_ids:
            raise LocalProtocolError("this node is not a member of its own view")
        if self.term >= MAX_INT64:
            raise LocalProtocolError("no term left: the term is already 2**63-1")
        self.term += 1
        self.voted_for = self.id
        self._term_leader = NO_NODE
        self._become_leader(frozenset({self.id}), now_ms)

    def campaign(self, now_ms: int, *, pre_vote: bool = True) -> None:
        """Start an election now, as an election timeout does: a pre-vote, then the vote.

        With ``pre_vote=False`` the node goes straight to the real vote (term + 1),
        as a leader's TimeoutNow makes it. For tests and scenario scripts, which
        make a leader by campaigning and delivering the replies rather than by
        ticking until a timeout fires; the election rules apply as always.
        A leader steps down first. Refused on a node that never campaigns (no
        view, or removed).
        """
        self._advance(now_ms)
        if self._cannot_lead():
            raise LocalProtocolError("a node without a view, or removed, never campaigns")
        if self.role is Role.LEADER:
            self._become_follower(self.term, NO_NODE)
        self._campaign(now_ms, pre_vote=pre_vote, transfer_from=NO_NODE)

    # == validation: nothing below changes any state =============================

    def _check(self, msg: Message) -> None:
        """Raise :class:`RemoteProtocolError` unless ``msg`` is one a correct peer could send."""
        check_shape(msg)
        if msg.sender == self.id:
            raise RemoteProtocolError(f"a message claims to come from this node ({self.id})")
        if not self._may_speak(msg):
            raise RemoteProtocolError(f"node {msg.sender} is not a member of epoch {self._epoch()}")
        leading = self.role is Role.LEADER
        match msg:
            case Append():
                checks.check_append(
                    msg,
                    term=self.term,
                    leading=leading,
                    term_leader=self._term_leader,
                    commit=self.commit,
                    log=self.log,
                )
            case AppendReply():
                checks.check_append_reply(
                    msg,
                    self._tracker.progress.get(msg.sender),
                    term=self.term,
                    leading=leading,
                    commit=self.commit,
                    snapshot_peers=self._tracker.snapshot_peers,
                )
            case VoteReply():
                checks.check_vote_reply(msg, self._ballot)
            case InstallSnapshot():
                checks.check_install_snapshot(
                    msg,
                    term=self.term,
                    leading=leading,
                    term_leader=self._term_leader,
                    commit=self.commit,
                    log=self.log,
                )

    def will_hear(self, peer: int, msgs: list[Message]) -> bool:
        """Whether a batch from ``peer`` deserves the core's attention at all.

        The shell asks this before delivering anything, so that a caller with
        valid credentials that speaks for no member is turned away at the door
        (``PERMISSION_DENIED``): members, a member being removed (it still acks
        the entries that remove it), anyone while we have no view (joining),
        and from anyone else only what :func:`~coord.core.checks.may_speak` lets through and is
        owed an answer (an Append of a newer view, a vote request, answered
        "not granted").
        """
        if (
            self.view is None
            or peer in self.view.config.member_ids
            or peer in self._tracker.progress
        ):
            return True
        return bool(msgs) and all(
            isinstance(m, Append | VoteRequest) and self._may_speak(m) for m in msgs
        )

    def _may_speak(self, msg: Message) -> bool:
        return checks.may_speak(
            msg, self.view, self.term, self._tracker.progress, self.log, self.commit
        )

    def _from_outsider(self, msg: Message) -> bool:
        """A reply from a node neither in our view nor in our bookkeeping: it has no say."""
        view = self.view
        return (
            view is not None
            and msg.sender not in view.config.member_ids
            and (msg.sender not in self._tracker.progress)
        )

    def _newer_view(self, msg: VoteRequest) -> bool:
        """The candidate's view is newer than ours: it may be a member we have not seen added."""
        return self.view is None or (msg.epoch_term, msg.epoch) > self.view.key

    def _epoch(self) -> int:
        return self.view.epoch if self.view is not None else 0

    # == outputs =================================================================

    def has_ready(self) -> bool:
        return self._outputs.pending(self._hard_state(), self.commit) or (
            self.role is Role.LEADER and self._has_unsent_entries()
        )

    def ready(self) -> Ready:
        """Everything produced since the last call, for the shell to carry out in order."""
        if self.role is Role.LEADER:
            self._replicate(self._now_ms, heartbeat=False)
        ready = self._outputs.take(self._hard_state(), self.commit, self._writes.next_seq())
        if ready.must_sync():
            last = ready.entries[-1].index if ready.entries else None
            self._writes.track(ready.seq, self._now_ms, last)
        if self._ballot is not None:
            leaves_now = not ready.must_sync() or not self._writes.reports_syncs
            self._ballot.handed_out(ready.seq, self._now_ms, leaves_now=leaves_now)
        return ready

    # == queries =================================================================

    @property
    def removed(self) -> bool:
        """Our view (the latest config entry we hold) does not include us.

        A removed node never campaigns and never grants a vote; it stays removed
        across restarts, since its log holds that config. (A node joining the
        cluster is also "removed" while it copies the configs from before it
        was added; it stops being so once it holds the one that adds it.)
        """
        return self.view is not None and self.id not in self.view.config.member_ids

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

    def read_index(self, now_ms: int) -> int:
        """The commit index a linearizable read must see applied; only under the lease."""
        if not self.has_lease(now_ms):
            raise Redirect(self.leader_id, "not the leader, or not holding the lease")
        if self.commit < self._term_start:
            raise Redirect(self.id, "new leader: its first entry is not committed yet")
        return self.commit

    def inspect(self) -> NodeState:
        """A frozen copy of the node's internal state (:mod:`coord.core.inspection`)."""
        ballot = self._ballot
        return NodeState(
            term=self.term,
            voted_for=self.voted_for,
            role=str(self.role),
            leader_id=self.leader_id,
            term_leader=self._term_leader,
            commit=self.commit,
            restarted=self.restarted,
            view=self.view,
            peers=tuple(
                (
                    peer,
                    PeerState(
                        p.match,
                        p.next,
                        p.mode,
                        p.probe_sent,
                        tuple(p.inflight),
                        p.acked_sent_at,
                        p.snapshot_ordered,
                    ),
                )
                for peer, p in sorted(self._tracker.progress.items())
            ),
            lease_leader=self._lease.leader_id,
            lease_until_ms=self._lease.until_ms,
            election_at_ms=self._election_at,
            ballot=None
            if ballot is None
            else BallotState(
                ballot.pre_vote, ballot.term, ballot.campaign, tuple(sorted(ballot.replies.items()))
            ),
            outbox=tuple(self._outputs.messages),
            install=self._outputs.install,
        )

    def status(self, now_ms: int) -> Status:
        """This node's view of the cluster (:mod:`coord.core.status`), without a disk fault."""
        view = self.view
        config = view.config if view else None
        own_role = self._role_name()
        members = tuple(
            member_status(
                member_id,
                address,
                own_id=self.id,
                own_role=own_role,
                own_last_index=self.log.last_index(),
                leader_id=self.leader_id,
                isr=config.isr,
                progress=self._tracker.progress.get(member_id),
                now_ms=now_ms,
                lease_ms=self.settings.lease_ms,
            )
            for member_id, address in (config.members if config else ())
        )
        leader = self.leader_id
        return Status(
            node_id=self.id,
            role=own_role,
            term=self.term,
            leader_id=leader,
            leader_address=config.address(leader) if config and leader != NO_NODE else "",
            commit_index=self.commit,
            members=members,
            config_epoch=view.epoch if view else 0,
            min_insync=config.min_insync if config else 0,
            mode=config.mode if config else "",
        )

    def follower_lags(self, now_ms: int) -> dict[int, tuple[int, int]]:
        """On a leader, each follower's distance behind its log, in entries and in ms
        (:meth:`coord.core.progress.Progress.lag_ms`); nothing on other nodes."""
        if self.role is not Role.LEADER:
            return {}
        return self._tracker.lags(now_ms, self.log.last_index())

    # == time ====================================================================

    def _note_heard(self, msg: Message, now_ms: int) -> None:
        """Who spoke, and who leads by what it says (validated messages only)."""
        self._heard_ms[msg.sender] = now_ms
        lease = self.settings.lease_ms
        if isinstance(msg, Append):
            self._leaders_seen[msg.sender] = now_ms + lease
        elif isinstance(msg, VoteReply) and msg.has_live_leader:
            view = self.view
            member = view is not None and msg.leader_id in view.config.member_ids
            if member and msg.leader_id != self.id:
                self._leaders_seen[msg.leader_id] = now_ms + lease

    def _synced_upto(self, seq: int, now_ms: int) -> bool:
        """Readies up to ``seq`` are durable. True if that took a stall (we reacted).

        Their messages waited for this write (and every Ready after them waits
        too), so a write longer than ``stall_ms`` is a stall like a paused
        process: a live node that has been this slow may have been dropped from
        the ISR, and its heartbeats and answers left late.
        """
        handed = self._writes.durable(seq)
        if handed is None:
            return False
        stalled = now_ms - handed > self.settings.stall_ms
        if stalled:
            self._stall()
        if self._ballot is not None:
            self._ballot.synced_through(seq, now_ms)
        return stalled

    def _stall(self) -> None:
        """We were stopped or stuck: we cannot vouch for our view, nor lead on.

        Answers already queued describe the node before the stall; they leave
        after it, so they say ``restarted`` too: the leader may have dropped us
        meanwhile, and a candidate must not take our old word for the epoch.
        """
        self.restarted = True
        self._restart_clear_epoch = None
        self._fence = self._rng.getrandbits(32)
        self._outputs.restate_vote_replies_restarted()
        if self.role is not Role.FOLLOWER:
            self._become_follower(self.term, NO_NODE)

    def _advance(self, now_ms: int) -> None:
        """Note the time of an input, and react to a stall the gap reveals."""
        gap = now_ms - self._last_input_ms
        self._last_input_ms = max(self._last_input_ms, now_ms)
        self._now_ms = self._last_input_ms
        if gap > self.settings.stall_ms:
            self._stall()
        elif gap > 2 * self.settings.heartbeat_ms and self.role is Role.LEADER:
            for progress in self._tracker.progress.values():
                progress.measure_afresh()
        if self._writes.late(self._now_ms):
            self._stall()  # a write is late: every message behind it waits (PROTOCOL.md rule 4)

    def _cannot_lead(self) -> bool:
        """No view yet (joining), or removed: such a node never campaigns."""
        return self.view is None or self.removed

    def _tick_follower(self, now_ms: int) -> None:
        view = self.view
        if view is None or self.removed or self._lease.live(now_ms):
            self._election_at = None
            return
        if self._election_at is None:
            self._election_at = now_ms + self._election_delay(view.config)
        elif now_ms >= self._election_at:
            self._campaign(now_ms, pre_vote=True, transfer_from=NO_NODE)

    def _election_delay(
        self, config: ClusterConfig, window_ms: int | None = None, dead: int = NO_NODE
    ) -> int:
        """:func:`coord.core.election.election_delay` over the members but ``dead`` (a node
        known dead takes no slot: when node 1 dies, node 2 goes first)."""
        ids = tuple(i for i in config.member_ids if i != dead)
        window = self.settings.election_stagger_ms if window_ms is None else window_ms
        cap = 4 * self.settings.lease_ms
        return election_delay(ids, self.id, window, self._lost_ballots, cap, self._rng.random)

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

    # == roles ===================================================================

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.voted_for)

    def _current_soft_state(self) -> SoftState:
        return SoftState(self._role_name(), self.leader_id, self.term)

    def _role_name(self) -> str:
        return str(Role.REMOVED if self.removed else self.role)

    def _note_soft_state(self) -> None:
        self._outputs.note_soft_state(self._current_soft_state())

    def _set_leader(self, leader_id: int) -> None:
        self.leader_id = leader_id
        self._note_soft_state()

    def _become_follower(self, term: int, leader_id: int) -> None:
        if term > self.term:
            self.term = term
            self.voted_for = NO_NODE
            self._term_leader = NO_NODE
        self.role = Role.FOLLOWER
        self._ballot = None
        self._tracker.progress.clear()
        self._transfer_to = NO_NODE
        self._election_at = None
        self._set_leader(leader_id)

    def _follow(self, term: int, leader_id: int, now_ms: int) -> None:
        """Accept ``leader_id`` as leader of ``term`` and grant it a lease."""
        if self.role is not Role.FOLLOWER or term > self.term or leader_id != self.leader_id:
            self._become_follower(term, leader_id)
        self._term_leader = leader_id
        self._yielded_to.clear()
        self._lease.grant(leader_id, now_ms, self.settings.lease_ms)
        self._election_at = None
        self._lost_ballots = 0

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

    # == elections ===============================================================

    def _campaign(self, now_ms: int, *, pre_vote: bool, transfer_from: int) -> None:
        """Start a pre-vote (term unchanged) or a vote (term + 1, voting for ourselves)."""
        config = self._view().config
        if self.term >= MAX_INT64:
            return  # no term left to run for (a forged term got this far): stay a follower
        if not pre_vote:
            self.term += 1
            self.voted_for = self.id
            self._term_leader = NO_NODE
        self.role = Role.CANDIDATE
        self._set_leader(NO_NODE)
        previous = self._ballot
        self._ballot = Ballot(
            pre_vote=pre_vote,
            term=self.term + 1 if pre_vote else self.term,
            campaign=self._rng.getrandbits(32),
            deadline_ms=now_ms + self.settings.election_wait_ms,
            voters=frozenset(i for i in config.member_ids if i != self.id),
            transfer_from=transfer_from,
        )
        self._ballot.carry_silence(previous, self._heard_ms)
        request = VoteRequest(
            term=self._ballot.term,
            sender=self.id,
            pre_vote=pre_vote,
            campaign=self._ballot.campaign,
            last_log_term=self.log.last_term(),
            last_log_index=self.log.last_index(),
            epoch=self._view().epoch,
            epoch_term=self._view().epoch_term,
            transfer_from=transfer_from,
        )
        for voter in sorted(self._ballot.voters):
            self._outputs.send(voter, request)
        self._judge(Trigger.CHANGE, now_ms)

    def _judge(self, trigger: Trigger, now_ms: int) -> None:
        """Act on the ballot's outcome (:meth:`coord.core.election.Ballot.judge`) once
        it is won or lost; report it then."""
        ballot = self._ballot
        assert ballot is not None
        own = self._vote_reply(ballot.pre_vote, ballot.campaign, True, has_live_leader=False)
        decision = ballot.judge(
            own,
            self._view().config,
            trigger,
            heard_ms=self._heard_ms,
            lease_leader=self._lease.leader_id,
            now_ms=now_ms,
            lease_ms=self.settings.lease_ms,
        )
        if decision.outcome in (Outcome.PENDING, Outcome.WAIT_A_LEASE):
            return
        self._outputs.report_election(
            ElectionResult(ballot.pre_vote, ballot.term, decision.won, decision.reason)
        )
        if not decision.won:
            if not ballot.pre_vote:
                self._lost_ballots += 1  # a real vote lost: a collision, or slow links
            members = self._view().config.member_ids
            live = [
                r.leader_id
                for r in ballot.replies.values()
                if r.has_live_leader and r.leader_id in members
            ]
            self._become_follower(self.term, live[0] if live else NO_NODE)
        elif ballot.pre_vote:
            self._campaign(now_ms, pre_vote=False, transfer_from=ballot.transfer_from)
        else:
            self._lost_ballots = 0
            self._become_leader(decision.isr, now_ms)

    def _vote_reply(
        self, pre_vote: bool, campaign: int, granted: bool, *, has_live_leader: bool
    ) -> VoteReply:
        """Our whole state, which a voter gives in every case (coord/PROTOCOL.md §8.1)."""
        view = self.view
        return VoteReply(
            term=self.term,
            sender=self.id,
            pre_vote=pre_vote,
            campaign=campaign,
            granted=granted,
            last_log_term=self.log.last_term(),
            last_log_index=self.log.last_index(),
            epoch=view.epoch if view else 0,
            epoch_term=view.epoch_term if view else 0,
            isr=tuple(sorted(view.config.isr)) if view else (),
            restarted=self.restarted,
            has_live_leader=has_live_leader,
            leader_id=self.leader_id if self.leader_id != NO_NODE else self._lease.leader_id,
        )

    def _on_vote_request(self, msg: VoteRequest, now_ms: int) -> None:
        """Grant or refuse; a live lease means neither granting nor adopting the term."""
        outsider = self.view is not None and msg.sender not in self.view.config.member_ids
        if self.removed or (outsider and not self._newer_view(msg)):
            # No say for us (removed), or none for it (not a member): neither
            # grant nor adopt the term. Our state tells it a newer config exists.
            self._outputs.send(
                msg.sender,
                self._vote_reply(msg.pre_vote, msg.campaign, False, has_live_leader=False),
            )
            return
        ballot = self._ballot
        if (
            ballot is not None
            and not ballot.pre_vote
            and not msg.pre_vote
            and msg.term == ballot.term == self.term
            and msg.sender in ballot.voters
        ):
            # A rival of this very term: alive, and it voted for itself. Its reply
            # to us will say "not granted"; take it as said (it may be slow).
            ballot.competing.add(msg.sender)
        if self.role is Role.LEADER:
            blocked = msg.pre_vote or self.has_lease(now_ms)
        else:
            blocked = self._lease.blocks(msg.sender, msg.transfer_from, now_ms)
        member = self.view is not None and msg.sender in self.view.config.member_ids
        if not msg.pre_vote and not blocked and msg.term > self.term:
            self._become_follower(msg.term, NO_NODE)
        granted = grants(
            msg,
            member=member,
            blocked=blocked,
            last_log=(self.log.last_term(), self.log.last_index()),
            term=self.term,
            voted_for=self.voted_for,
            outranked=msg.pre_vote and self._outranks(msg),
        )
        if msg.pre_vote:
            if granted and self._may_win(msg) and msg.sender not in self._yielded_to:
                self._yielded_to.add(msg.sender)  # once, until it runs a real vote
                self._yield_to(now_ms)
        else:
            self._yielded_to.discard(msg.sender)  # its pre-vote came to something
            if granted:
                self.voted_for = msg.sender
                self._election_at = now_ms + self.settings.lease_ms // 2
        reply = self._vote_reply(msg.pre_vote, msg.campaign, granted, has_live_leader=blocked)
        self._outputs.send(msg.sender, reply)

    def _outranks(self, msg: VoteRequest) -> bool:
        """Our own campaign goes first: ``msg``, a pre-vote, gets no grant from us
        (:func:`coord.core.election.outranks`)."""
        ballot = self._ballot
        if self.role is not Role.CANDIDATE or ballot is None:
            return False
        return outranks(
            ballot.pre_vote,
            we_may_win=not self._newer_view(msg) and may_win_on(self._view().config, self.id),
            ours=(self.log.last_term(), self.log.last_index(), self.id),
            theirs=(msg.last_log_term, msg.last_log_index, msg.sender),
        )

    def _may_win(self, msg: VoteRequest) -> bool:
        """Whether ``msg``'s candidate may win as far as our view tells (else no yielding)."""
        return self._newer_view(msg) or may_win_on(self._view().config, msg.sender)

    def _yield_to(self, now_ms: int) -> None:
        """We granted a pre-vote that may win: give its real vote time to reach us."""
        if self.role is Role.CANDIDATE:
            self._become_follower(self.term, NO_NODE)  # our own pre-vote gives way
        if self.role is Role.FOLLOWER:
            defer = now_ms + self.settings.lease_ms
            self._election_at = max(self._election_at or defer, defer)

    def _on_vote_reply(self, msg: VoteReply, now_ms: int) -> None:
        ballot = self._ballot
        if ballot is None or (msg.campaign, msg.pre_vote) != (ballot.campaign, ballot.pre_vote):
            return
        if msg.sender not in ballot.voters:
            return  # a late reply from a node no longer in our view
        ballot.record(msg)
        self._judge(Trigger.REPLY, now_ms)

    # == replication: follower side ==============================================

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

    # == replication: leader side ================================================

    def _require_leader(self) -> None:
        if self.role is not Role.LEADER:
            raise Redirect(self.leader_id)
        if self._transfer_to != NO_NODE:
            raise Redirect(self._transfer_to, "leadership is being transferred")

    def _view(self) -> View:
        if self.view is None:
            raise LocalProtocolError("this node has no config yet")
        return self.view

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

    # == flow control: what each follower is sent ================================

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

    # == leadership transfer =====================================================

    def _maybe_finish_transfer(self, now_ms: int) -> None:
        progress = self._tracker.progress.get(self._transfer_to)
        if not target_caught_up(progress.match if progress else None, self.log.last_index()):
            return
        target = self._transfer_to
        self._outputs.send(target, TimeoutNow(self.term, self.id))
        self._become_follower(self.term, NO_NODE)
        self._lease.grant(self.id, now_ms, self.settings.lease_ms)

    def _on_timeout_now(self, msg: TimeoutNow, now_ms: int) -> None:
        if obeys_timeout_now(msg, self.term, self.leader_id, may_campaign=not self._cannot_lead()):
            self._campaign(now_ms, pre_vote=False, transfer_from=msg.sender)
