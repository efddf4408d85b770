"""Elections: one round of (pre-)votes, and the rule that decides it (DESIGN.md section 3).

A :class:`Ballot` collects :class:`~coord.messages.VoteReply` values, the
candidate's own state included as a reply from itself, until every voter has
answered, refused connection, or ``election_wait_ms`` has passed. Then
:func:`decide` applies the rule of the cluster's mode. It is a pure function
of the replies, so the rule can be read and tested apart from the node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from coord.config import ClusterConfig
from coord.messages import VoteReply


@dataclass(slots=True)
class Ballot:
    """One round: a pre-vote (nobody's term changes) or a vote for ``term``."""

    pre_vote: bool
    term: int
    campaign: int
    deadline_ms: int
    voters: frozenset[int]
    transfer_from: int
    replies: dict[int, VoteReply] = field(default_factory=dict)
    unreachable: set[int] = field(default_factory=set)

    def record(self, reply: VoteReply) -> None:
        if reply.sender in self.voters:
            self.replies[reply.sender] = reply

    def complete(self) -> bool:
        """Every voter answered or refused connection: no reason to wait longer."""
        return self.voters <= self.replies.keys() | self.unreachable


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome, why, and the ISR a winner starts with (``ISR* ∩ R``)."""

    won: bool
    reason: str
    isr: frozenset[int] = frozenset()


def decide(candidate: int, replies: Mapping[int, VoteReply], config: ClusterConfig) -> Decision:
    """Apply the election rule to the responders R (``replies``, the candidate's own included).

    *Quorum mode* wins with a majority of grants. *Fail-stop mode* wins only if
    no responder has a live leader, the candidate is in ISR* (the ISR of the
    latest view E* in R), every member of ISR* in R granted, and E* is proven
    latest: some member of ISR* in R never restarted, or all of ISR* is in R.
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
        return Decision(False, f"only {grants} of {len(config.members)} granted")
    if any(r.has_live_leader for r in responders.values()):
        return Decision(False, "a responder holds a live lease")
    if candidate not in isr_star:
        return Decision(False, f"not in ISR* {sorted(isr_star)} of epoch {latest.epoch}")
    refused = sorted(i for i in present if not responders[i].granted)
    if refused:
        return Decision(False, f"ISR* members {refused} did not grant")
    if all(responders[i].restarted for i in present) and not isr_star <= responders.keys():
        missing = sorted(isr_star - responders.keys())
        return Decision(False, f"epoch {latest.epoch} not proven latest: {missing} silent")
    return Decision(True, f"ISR* {sorted(isr_star)} agrees", new_isr)
