"""Elections: one round of (pre-)votes, and the rule that decides it (coord/PROTOCOL.md §8).

A :class:`Ballot` collects :class:`~coord.core.messages.VoteReply` values, the
candidate's own state included as a reply from itself, until every voter has
answered, refused connection, or can be shown unable to answer (see
:func:`decide` and PROTOCOL.md, "Why fail-stop elections are safe"). Then
:func:`decide` applies the rule of the cluster's mode. It is a pure function
of what the ballot saw, so the rule can be read and tested apart from the node.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from coord.core.config import ClusterConfig
from coord.core.messages import VoteReply


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
