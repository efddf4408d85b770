"""What a :class:`~coord.core.node.Node` does in elections: campaign, and vote for others.

A follower whose lease on its leader runs out campaigns after a stagger
(:func:`coord.core.election.election_delay`): a pre-vote, then the real vote,
whose :class:`~coord.core.election.Ballot` decides by
:meth:`~coord.core.election.Ballot.judge`. As a voter it grants by
:func:`coord.core.election.grants`, gives way to a rival whose pre-vote goes
first (:func:`coord.core.election.outranks`), and answers every request with its
whole state. The rules are :mod:`coord.core.election`'s; this is the node's half
that carries them out, mixed into :class:`~coord.core.node.Node`, whose state it
shares.
"""

from __future__ import annotations

from coord.core.config import ClusterConfig
from coord.core.election import (
    Ballot,
    Outcome,
    Trigger,
    election_delay,
    grants,
    may_win_on,
    outranks,
)
from coord.core.log import NO_NODE
from coord.core.messages import MAX_INT64, Message, VoteReply, VoteRequest
from coord.core.ready import ElectionResult
from coord.core.roles import NodeFields, Role


class Voting(NodeFields):
    """The candidate's and the voter's side of :class:`~coord.core.node.Node`; the state is
    the node's."""

    def _step_candidate(self, msg: Message, now_ms: int) -> None:
        """A candidate hears only its voters: it follows nobody yet (an Append made us
        a follower before this)."""
        if isinstance(msg, VoteReply):
            self._on_vote_reply(msg, now_ms)

    def _tick_follower(self, now_ms: int) -> None:
        """A follower's election timer: armed once its lease on a leader runs out,
        staggered (:meth:`_election_delay`), and a pre-vote when it fires."""
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

    def _newer_view(self, msg: VoteRequest) -> bool:
        """The candidate's view is newer than ours: it may be a member we have not seen added."""
        return self.view is None or (msg.epoch_term, msg.epoch) > self.view.key
