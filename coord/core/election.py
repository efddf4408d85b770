"""Elections: one round of (pre-)votes, and the rule that decides it (coord/PROTOCOL.md §8).

A :class:`Ballot` collects :class:`~coord.core.messages.VoteReply` values, the
candidate's own state included as a reply from itself, until every voter has
answered, refused connection, or can be shown unable to answer (see
:func:`decide` and PROTOCOL.md, "Why fail-stop elections are safe"). Then
:func:`decide` applies the rule of the cluster's mode. It is a pure function
of what the ballot saw, so the rule can be read and tested apart from the node.
So are the voter's side (:func:`grants`), which silent voters count as unable
to answer (:func:`silent_voters`), and how long a follower waits before it
campaigns (:func:`election_delay`); ``tests/core/test_vote_decision.py`` holds
their tables.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from coord.core.config import ClusterConfig
from coord.core.log import NO_NODE
from coord.core.messages import VoteReply, VoteRequest


@dataclass(slots=True)
class Ballot:
    """One round: a pre-vote (nobody's term changes) or a vote for ``term``.

    ``sent_ms`` is when the requests are known to have left: the shell reported
    the fsync of the Ready that carried them (:meth:`coord.core.node.Node.synced`),
    None until then. A voter's silence counts only from there: a candidate
    whose own disk stalls must not take the silence it caused for death.
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


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome, why, and the ISR a winner starts with (``ISR* ∩ R``).

    ``waiting``: not decided yet, a member of ISR* may still answer; ask again
    later (a fail-stop real vote only). ``final``: no answer still missing can
    change a loss (a live leader, a refusal, not in ISR*); a loss that is not
    final may turn into a win when a slow voter answers, so the candidate
    keeps listening until a live node's answer would have come (a lease).
    """

    won: bool
    reason: str
    isr: frozenset[int] = frozenset()
    waiting: bool = False
    final: bool = True


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
    accounted for, otherwise the decision is ``waiting``: a live member slow
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
            return Decision(True, f"{grants} of {len(config.members)} granted", new_isr)
        missing = len(config.members) - len(responders)
        final = grants + missing < config.majority
        return Decision(False, f"only {grants} of {len(config.members)} granted", final=final)
    if any(r.has_live_leader for r in responders.values()):
        return Decision(False, "a responder holds a live lease")
    if candidate not in isr_star:
        return Decision(False, f"not in ISR* {sorted(isr_star)} of epoch {latest.epoch}")
    refused = sorted(
        {i for i in present if not responders[i].granted} | (set(competing) & isr_star)
    )
    if refused:
        return Decision(False, f"ISR* members {refused} did not grant")
    if accounted is not None:
        unknown = sorted(isr_star - responders.keys() - set(accounted))
        if unknown:
            reason = f"ISR* members {unknown} may still answer"
            return Decision(False, reason, waiting=True, final=False)
    if all(responders[i].restarted for i in present) and not isr_star <= responders.keys():
        missing = sorted(isr_star - responders.keys())
        reason = f"epoch {latest.epoch} not proven latest: {missing} silent"
        return Decision(False, reason, final=False)
    return Decision(True, f"ISR* {sorted(isr_star)} agrees", new_isr)


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
