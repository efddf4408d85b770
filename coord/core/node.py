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

import random

from coord.core import checks
from coord.core.config import AddMember, ClusterConfig, ConfigChange, View, config_entry
from coord.core.election import (
    Ballot,
    Trigger,
)
from coord.core.entry import EntryKind
from coord.core.errors import ChangeInFlight, LocalProtocolError, Redirect, RemoteProtocolError
from coord.core.following import Following
from coord.core.inspection import BallotState, NodeState, PeerState
from coord.core.leading import Leading
from coord.core.lease import FollowerLease
from coord.core.log import NO_NODE, HardState, RaftLog, Storage
from coord.core.messages import (
    MAX_INT64,
    NO_HEARTBEAT,
    Append,
    AppendReply,
    InstallSnapshot,
    Message,
    VoteReply,
    VoteRequest,
    check_shape,
)
from coord.core.outputs import Outputs
from coord.core.ready import Ready, SoftState
from coord.core.roles import Role
from coord.core.settings import Settings
from coord.core.status import Status, member_status
from coord.core.tracker import Tracker
from coord.core.transfer import may_transfer_to
from coord.core.voting import Voting
from coord.core.writes import PendingWrites


class Node(Leading, Voting, Following):
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
    rules are applied to and dispatches each input to them. Each role's side
    is a room of its own: :class:`~coord.core.leading.Leading`,
    :class:`~coord.core.voting.Voting` (candidates and voters) and
    :class:`~coord.core.following.Following`; this module keeps the inputs, the
    term rule, the role changes and the queries.
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
            self._ballot.handed_out(ready.seq, self._now_ms, leaves_now=not ready.must_sync())
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

    def read_index(self, now_ms: int) -> int:
        """The commit index a linearizable read must see applied; only under the lease."""
        if not self.has_lease(now_ms):
            raise Redirect(self.leader_id, "not the leader, or not holding the lease")
        if self.commit < self._term_start:
            raise Redirect(self.id, "new leader: its first entry is not committed yet")
        return self.commit

    def inspect(self) -> NodeState:
        """A frozen copy of the node's internal state (:mod:`coord.core.inspection`)."""
        return NodeState(
            term=self.term,
            voted_for=self.voted_for,
            role=str(self.role),
            leader_id=self.leader_id,
            term_leader=self._term_leader,
            commit=self.commit,
            restarted=self.restarted,
            view=self.view,
            peers=tuple((i, PeerState.of(p)) for i, p in sorted(self._tracker.progress.items())),
            lease_leader=self._lease.leader_id,
            lease_until_ms=self._lease.until_ms,
            election_at_ms=self._election_at,
            ballot=BallotState.of(self._ballot),
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

    # == roles ===================================================================

    def _view(self) -> View:
        if self.view is None:
            raise LocalProtocolError("this node has no config yet")
        return self.view

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

    # == the follower's side ======================================================
