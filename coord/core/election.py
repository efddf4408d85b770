"""Elections: one round of (pre-)votes, its whole life, and the rule that decides it
(coord/PROTOCOL.md §8).

A :class:`Ballot` collects :class:`~coord.core.messages.VoteReply` values, the
candidate's own state included as a reply from itself, until every voter has
answered, refused connection, or can be shown unable to answer (see
:func:`decide` and PROTOCOL.md, "Why fail-stop elections are safe"). The
ballot also keeps its own clock: when its requests left (they wait for the
fsync of the Ready that carries them) and so from when each voter's silence
counts. :meth:`Ballot.judge` gives its one :class:`Outcome` at any moment:
the rule of the cluster's mode (:func:`decide`, a pure function of what the
ballot saw) and the timing around it (deciding early on a majority, waiting a
lease on a loss a slow voter could still turn). So are the voter's side
(:func:`grants`), which silent voters count as unable to answer
(:func:`silent_voters`), and how long a follower waits before it campaigns
(:func:`election_delay`); ``tests/core/test_vote_decision.py`` holds their
tables.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from coord.core.config import ClusterConfig
from coord.core.log import NO_NODE
from coord.core.messages import VoteReply, VoteRequest


class Outcome(enum.Enum):
    """Where a ballot stands."""

    WON = "won"
    LOST = "lost"
    PENDING = "pending"  # not decided: ask again at the next input
    WAIT_A_LEASE = "wait a lease"  # lost so far; a slow voter's answer may still turn it


class Trigger(enum.Enum):
    """Why a ballot is judged now, which decides whether it may be decided at all."""

    REPLY = "reply"  # a vote reply arrived: a winning majority may decide before the rest
    DEADLINE = "deadline"  # election_wait has passed: decide on what the ballot holds
    CHANGE = "change"  # the ballot began, or a voter became unreachable: decide once complete


@dataclass(slots=True)
class Ballot:
    """One round: a pre-vote (nobody's term changes) or a vote for ``term``.

    ``sent_ms`` is when the requests are known to have left: the shell reported
    the fsync of the Ready that carried them (:meth:`synced_through`), None
    until then. A voter's silence counts only from there: a candidate whose
    own disk stalls must not take the silence it caused for death.
    ``competing`` are voters whose own vote request for this very term reached
    us: alive, and each voted for itself, which is as good as a refusal.
    """

    pre_vote: bool
    term: int
    campaign: int
    deadline_ms: int
    voters: frozenset[int]
    transfer_from: int
    replies: dict[int, VoteReply] = field(default_factory=dict)
    unreachable: set[int] = field(default_factory=set)
    competing: set[int] = field(default_factory=set)
    sent_ms: int | None = None
    handed_seq: int | None = None  # the Ready that carried the requests
    quiet_from: dict[int, int] = field(default_factory=dict)  # silent since the pre-vote

    def record(self, reply: VoteReply) -> None:
        if reply.sender in self.voters:
            self.replies[reply.sender] = reply

    def complete(self) -> bool:
        """Every voter answered or refused connection: no reason to wait longer."""
        return self.voters <= self.replies.keys() | self.unreachable

    def carry_silence(self, previous: Ballot | None, heard_ms: Mapping[int, int]) -> None:
        """Voters silent through the pre-vote (``previous``) have been asked since it
        left: their silence counts from there (one lease, not two, for a paused one)."""
        if previous is None or not previous.pre_vote or previous.sent_ms is None:
            return
        for voter in previous.voters - previous.replies.keys():
            if heard_ms.get(voter, previous.sent_ms - 1) < previous.sent_ms:
                self.quiet_from[voter] = previous.sent_ms

    def handed_out(self, seq: int, now_ms: int, *, leaves_now: bool) -> None:
        """The Ready numbered ``seq`` is the first handed out since the ballot began, so
        it carries the requests; they leave at once unless it must sync first."""
        if self.handed_seq is None:
            self.handed_seq = seq
            if leaves_now:
                self.sent_ms = now_ms

    def synced_through(self, seq: int, now_ms: int) -> None:
        """Readies up to ``seq`` are durable: the requests have left if theirs is one."""
        if self.handed_seq is not None and self.handed_seq <= seq and self.sent_ms is None:
            self.sent_ms = now_ms

    def judge(
        self,
        own: VoteReply,
        config: ClusterConfig,
        trigger: Trigger,
        *,
        heard_ms: Mapping[int, int],
        lease_leader: int,
        now_ms: int,
        lease_ms: int,
    ) -> Decision:
        """The ballot's outcome now: the rule (:func:`decide`) and the timing around it.

        A majority of grants is unique per term (a voter grants once per term),
        so it decides as soon as the replies so far make one, as in Raft; so
        does a pre-vote, which is advisory (the real vote still waits). A
        fail-stop vote without a majority must account for every member of
        ISR*: answered, refused connection, or silent for longer than a live
        node takes to answer; without that two candidates could each win a
        disjoint part of the cluster in one term (the simulator finds this
        within a few hundred seeds). The pre-vote accounts too, though
        advisory: a candidate that does not wait for a slow rival's refusal
        there runs into it in the real vote, both lose, and slow links
        livelock. A loss that a slow voter could still turn waits until a
        lease after the requests left (live nodes answer within the lease):
        giving up at election_wait livelocks slow links.
        """
        granted = 1 + sum(r.granted for r in self.replies.values())  # our own vote counts
        majority = config.quorum_mode or granted >= config.majority
        accounted = None
        if not majority:
            silent = silent_voters(self, heard_ms, lease_leader, now_ms, lease_ms)
            accounted = self.unreachable | silent
        replies = {**self.replies, own.sender: own}
        decision = decide(
            own.sender, replies, config, accounted=accounted, competing=self.competing
        )
        early = trigger is Trigger.REPLY and (self.pre_vote or majority)
        if not (trigger is Trigger.DEADLINE or self.complete() or (early and decision.won)):
            return dataclasses.replace(decision, outcome=Outcome.PENDING)
        if decision.outcome is Outcome.WAIT_A_LEASE:
            sent = self.sent_ms if self.sent_ms is not None else self.deadline_ms
            if self.complete() or now_ms >= sent + lease_ms:
                return dataclasses.replace(decision, outcome=Outcome.LOST)
        return decision


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome, why, and the ISR a winner starts with (``ISR* ∩ R``).

    From :func:`decide`: ``PENDING`` when a member of ISR* may still answer
    (a fail-stop real vote only); ``WAIT_A_LEASE`` for a loss that is not
    final, which a slow voter's answer may turn into a win; ``LOST`` when no
    answer still missing can change it (a live leader, a refusal, not in
    ISR*).
    """

    outcome: Outcome
    reason: str
    isr: frozenset[int] = frozenset()

    @property
    def won(self) -> bool:
        return self.outcome is Outcome.WON


def decide(
    candidate: int,
    replies: Mapping[int, VoteReply],
    config: ClusterConfig,
    *,
    accounted: Collection[int] | None = None,
    competing: Collection[int] = (),
) -> Decision:
    """Apply the election rule to the responders R (``replies``, the candidate's own included).

    *Quorum mode* wins with a majority of grants. *Fail-stop mode* wins only if
    no responder has a live leader, the candidate is in ISR* (the ISR of the
    latest view E* in R), every member of ISR* in R granted (a member whose
    own request for this term reached us, ``competing``, did not), and E* is
    proven latest: some member of ISR* in R never restarted, or all of ISR* is
    in R.

    ``accounted`` (a real fail-stop vote): the silent voters shown unable to
    answer, by a refused connection or by a silence longer than a live node's
    answer takes. Every member of ISR* must then have answered or be
    accounted for, otherwise the decision is ``PENDING``: a live member slow
    to answer may be a candidate of this very term (PROTOCOL.md). ``None``
    (a pre-vote, advisory) decides on whoever answered.
    """
    responders = {i: r for i, r in replies.items() if i in config.member_ids}
    latest = max(responders.values(), key=lambda r: (r.epoch_term, r.epoch))
    isr_star = frozenset(latest.isr)
    present = isr_star & responders.keys()
    new_isr = present | {candidate}
    if config.quorum_mode:
        grants = sum(r.granted for r in responders.values())
        if grants >= config.majority:
            return Decision(Outcome.WON, f"{grants} of {len(config.members)} granted", new_isr)
        missing = len(config.members) - len(responders)
        outcome = Outcome.LOST if grants + missing < config.majority else Outcome.WAIT_A_LEASE
        return Decision(outcome, f"only {grants} of {len(config.members)} granted")
    if any(r.has_live_leader for r in responders.values()):
        return Decision(Outcome.LOST, "a responder holds a live lease")
    if candidate not in isr_star:
        return Decision(Outcome.LOST, f"not in ISR* {sorted(isr_star)} of epoch {latest.epoch}")
    refused = sorted(
        {i for i in present if not responders[i].granted} | (set(competing) & isr_star)
    )
    if refused:
        return Decision(Outcome.LOST, f"ISR* members {refused} did not grant")
    if accounted is not None:
        unknown = sorted(isr_star - responders.keys() - set(accounted))
        if unknown:
            reason = f"ISR* members {unknown} may still answer"
            return Decision(Outcome.PENDING, reason)
    if all(responders[i].restarted for i in present) and not isr_star <= responders.keys():
        missing = sorted(isr_star - responders.keys())
        reason = f"epoch {latest.epoch} not proven latest: {missing} silent"
        return Decision(Outcome.WAIT_A_LEASE, reason)
    return Decision(Outcome.WON, f"ISR* {sorted(isr_star)} agrees", new_isr)


def grants(
    request: VoteRequest,
    *,
    member: bool,
    blocked: bool,
    last_log: tuple[int, int],
    term: int,
    voted_for: int,
    outranked: bool,
) -> bool:
    """Whether a voter grants ``request`` (its term already adopted for a real vote).

    Only a member's request, only with no live lease in the way (``blocked``),
    and only for a log at least as long as ``last_log`` (term, index), as in
    Raft. A pre-vote asks about the next term and is refused when the voter's
    own campaign goes first (``outranked``); a real vote is for our term, and
    one vote per term.
    """
    log_ok = (request.last_log_term, request.last_log_index) >= last_log
    if not (member and not blocked and log_ok):
        return False
    if request.pre_vote:
        return request.term > term and not outranked
    return request.term == term and voted_for in (NO_NODE, request.sender)


def silent_voters(
    ballot: Ballot, heard_ms: Mapping[int, int], lease_leader: int, now_ms: int, lease_ms: int
) -> set[int]:
    """Voters that would have answered by now if they were alive and not stalled.

    Live nodes answer within the lease (coord/PROTOCOL.md §4): a lease after the
    requests left, silence means crashed or stalled, and a stalled node learns
    of its stall before it does anything (it steps down). A voter silent since
    the pre-vote left (``quiet_from``) counts from there. The leader we
    followed (``lease_leader``) counts from its last message (``heard_ms``): it
    sends one every heartbeat while it leads, so a lease of silence from it
    already says the same.
    """
    waiting = ballot.voters - ballot.replies.keys()
    if ballot.sent_ms is not None and now_ms >= ballot.sent_ms + lease_ms:
        return set(waiting)
    silent = set()
    for voter in waiting:
        since = ballot.quiet_from.get(voter)
        heard = heard_ms.get(voter)
        if since is not None and now_ms >= since + lease_ms and (heard is None or heard < since):
            silent.add(voter)
    heard = heard_ms.get(lease_leader)
    if lease_leader in waiting and heard is not None and now_ms >= heard + lease_ms:
        silent.add(lease_leader)
    return silent


def election_delay(
    ids: Sequence[int],
    node_id: int,
    window_ms: int,
    lost_ballots: int,
    cap_ms: int,
    draw: Callable[[], float],
) -> int:
    """How long a follower waits before it campaigns: a random wait in ``[0, window_ms)``.

    ``ids`` are the members that may campaign; lower ids draw from earlier
    slots, so candidates rarely collide. After ``lost_ballots`` real votes lost
    in a row (collisions, slow links) the wait is random over a window that
    doubles each time, up to ``cap_ms``, so candidates whose requests cross (a
    round trip may take up to a lease) stop meeting: random rather than by id,
    since id slots narrower than the round trip would collide forever. A
    member alone waits for nobody. ``draw`` (uniform in [0, 1)) is called
    once, and only when there is a wait to draw.
    """
    if len(ids) == 1:
        return 0  # nobody to collide with
    if lost_ballots:
        return int(min(cap_ms, window_ms << min(lost_ballots, 8)) * draw())
    slot = window_ms / len(ids)
    return int(slot * (list(ids).index(node_id) + draw()))


def may_win_on(config: ClusterConfig, candidate: int) -> bool:
    """Whether ``candidate`` may win as far as ``config`` tells: anyone in quorum mode,
    only a member of the ISR in fail-stop mode."""
    return config.quorum_mode or candidate in config.isr


def outranks(
    in_pre_vote: bool,
    *,
    we_may_win: bool,
    ours: tuple[int, int, int],
    theirs: tuple[int, int, int],
) -> bool:
    """Whether a candidate's own campaign goes first: a rival's pre-vote gets no grant.

    Pre-votes do not exclude one another, so candidates whose pre-votes
    overlap all won them and then split the real vote, each voting for
    itself; in fail-stop mode, where a restarted cluster needs every member's
    grant, that livelocks once a round trip is longer than the stagger (5
    nodes, delays of half a lease). A candidate in a real vote
    (``in_pre_vote`` false) refuses every pre-vote. Of two pre-vote
    candidates that may both win (``we_may_win``: our view says we can, and
    the rival's view is not newer), the lower id goes on and the other
    yields, unless the other's log is longer: it refuses the lower id for
    that, so standing in its way leaves both refusing each other round after
    round. ``ours`` and ``theirs`` are (last log term, last log index, id).
    Refusing a pre-vote is always safe (it is advisory).
    """
    if not in_pre_vote:
        return True
    if not we_may_win:
        return False  # we cannot win (or cannot tell): never stand in its way
    our_log, their_log = ours[:2], theirs[:2]
    return our_log > their_log or (our_log == their_log and ours[2] < theirs[2])
