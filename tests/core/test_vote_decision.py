"""Elections as tables (coord/core/election.py, coord/PROTOCOL.md §8), in the style of
etcd raft's quorum tests: the vote decision (responders -> won / lost / pending / wait a
lease, and the reason given), the ballot's outcome over time, a voter's grant, which
silent voters count, and the wait before a campaign."""

from __future__ import annotations

import pytest

from coord.core.config import ClusterConfig
from coord.core.election import (
    Ballot,
    Decision,
    Outcome,
    Trigger,
    decide,
    election_delay,
    grants,
    may_win_on,
    outranks,
    silent_voters,
)
from coord.core.messages import VoteReply, VoteRequest
from tests.support.votes import FAILSTOP, QUORUM
from tests.support.votes import vote_reply as vote

R = True  # restarted
WON, LOST, PENDING, WAIT = Outcome.WON, Outcome.LOST, Outcome.PENDING, Outcome.WAIT_A_LEASE


@pytest.mark.parametrize(
    ("config", "replies", "accounted", "competing", "expected"),
    [
        # quorum mode: a majority of grants, whoever answered
        (QUORUM, [vote(1), vote(2)], None, (), Decision(WON, "2 of 3 granted", frozenset({1, 2}))),
        (QUORUM, [vote(1)], None, (), Decision(WAIT, "only 1 of 3 granted")),
        (
            QUORUM,
            [vote(1), vote(2, granted=False), vote(3, granted=False)],
            None,
            (),
            Decision(LOST, "only 1 of 3 granted"),
        ),
        # fail-stop mode
        (
            FAILSTOP,
            [vote(1, restarted=R), vote(2)],
            None,
            (),
            Decision(WON, "ISR* [1, 2, 3] agrees", frozenset({1, 2})),
        ),
        (
            FAILSTOP,
            [vote(1), vote(2, live=True)],
            None,
            (),
            Decision(LOST, "a responder holds a live lease"),
        ),
        (
            FAILSTOP,
            [vote(1), vote(2, epoch=9, isr=(2,))],
            None,
            (),
            Decision(LOST, "not in ISR* [2] of epoch 9"),
        ),
        (
            FAILSTOP,
            [vote(1), vote(2, granted=False)],
            None,
            (),
            Decision(LOST, "ISR* members [2] did not grant"),
        ),
        (
            FAILSTOP,
            [vote(1), vote(2)],
            None,
            (3,),
            Decision(LOST, "ISR* members [3] did not grant"),
        ),
        (
            FAILSTOP,
            [vote(1), vote(2)],
            (),
            (),
            Decision(PENDING, "ISR* members [3] may still answer"),
        ),
        (
            FAILSTOP,
            [vote(1), vote(2)],
            (3,),
            (),
            Decision(WON, "ISR* [1, 2, 3] agrees", frozenset({1, 2})),
        ),
        (
            FAILSTOP,
            [vote(1, restarted=R), vote(2, restarted=R)],
            None,
            (),
            Decision(WAIT, "epoch 5 not proven latest: [3] silent"),
        ),
        (
            FAILSTOP,
            [vote(1, restarted=R), vote(2, restarted=R), vote(3, restarted=R)],
            None,
            (),
            Decision(WON, "ISR* [1, 2, 3] agrees", frozenset({1, 2, 3})),
        ),
    ],
)
def test_decide(
    config: ClusterConfig,
    replies: list[VoteReply],
    accounted: tuple[int, ...] | None,
    competing: tuple[int, ...],
    expected: Decision,
) -> None:
    by_sender = {r.sender: r for r in replies}
    assert decide(1, by_sender, config, accounted=accounted, competing=competing) == expected


def request(*, pre_vote: bool, term: int = 3, sender: int = 2, log: tuple[int, int] = (1, 5)):
    return VoteRequest(
        term=term,
        sender=sender,
        pre_vote=pre_vote,
        campaign=0,
        last_log_term=log[0],
        last_log_index=log[1],
        epoch=1,
        epoch_term=0,
        transfer_from=0,
    )


@pytest.mark.parametrize(
    ("msg", "member", "blocked", "last_log", "voted_for", "outranked", "expected"),
    [
        # real votes for term 3 (the voter's term, adopted)
        (request(pre_vote=False), True, False, (1, 5), 0, False, True),
        (request(pre_vote=False), True, False, (1, 5), 2, False, True),  # the same again
        (request(pre_vote=False), True, False, (1, 5), 3, False, False),  # voted for 3
        (request(pre_vote=False), False, False, (1, 5), 0, False, False),  # not a member
        (request(pre_vote=False), True, True, (1, 5), 0, False, False),  # a live lease
        (request(pre_vote=False), True, False, (1, 6), 0, False, False),  # shorter log
        (request(pre_vote=False), True, False, (2, 1), 0, False, False),  # older last term
        (request(pre_vote=False, term=4), True, False, (1, 5), 0, False, False),  # not our term
        # pre-votes ask about the next term
        (request(pre_vote=True, term=4), True, False, (1, 5), 3, False, True),
        (request(pre_vote=True, term=3), True, False, (1, 5), 0, False, False),  # not ahead
        (request(pre_vote=True, term=4), True, False, (1, 5), 0, True, False),  # we go first
        (request(pre_vote=True, term=4), True, True, (1, 5), 0, False, False),  # a live lease
    ],
)
def test_grants(
    msg: VoteRequest,
    member: bool,
    blocked: bool,
    last_log: tuple[int, int],
    voted_for: int,
    outranked: bool,
    expected: bool,
) -> None:
    got = grants(
        msg,
        member=member,
        blocked=blocked,
        last_log=last_log,
        term=3,
        voted_for=voted_for,
        outranked=outranked,
    )
    assert got is expected


LEASE = 200


def ballot(*, sent_ms: int | None, replied: tuple[int, ...] = (), quiet_from=None) -> Ballot:
    b = Ballot(False, 3, 0, 0, frozenset({2, 3, 4}), 0, sent_ms=sent_ms)
    b.replies.update({i: vote(i) for i in replied})
    b.quiet_from.update(quiet_from or {})
    return b


@pytest.mark.parametrize(
    ("the_ballot", "heard", "lease_leader", "now", "expected"),
    [
        (ballot(sent_ms=None), {}, 0, 1000, set()),  # requests not out: nobody silent yet
        (ballot(sent_ms=100), {}, 0, 299, set()),  # less than a lease since they left
        (ballot(sent_ms=100), {}, 0, 300, {2, 3, 4}),  # a lease: every one not answering
        (ballot(sent_ms=100, replied=(3,)), {}, 0, 300, {2, 4}),
        (ballot(sent_ms=250, quiet_from={2: 50}), {}, 0, 250, {2}),  # silent since the pre-vote
        (ballot(sent_ms=250, quiet_from={2: 50}), {2: 60}, 0, 250, set()),  # it spoke since
        (ballot(sent_ms=250), {4: 40}, 4, 240, {4}),  # our leader: a lease since its last word
        (ballot(sent_ms=250), {4: 100}, 4, 240, set()),
    ],
)
def test_silent_voters(
    the_ballot: Ballot, heard: dict[int, int], lease_leader: int, now: int, expected: set[int]
) -> None:
    assert silent_voters(the_ballot, heard, lease_leader, now, LEASE) == expected


def round_of(
    pre_vote: bool = False,
    *,
    replies: tuple[VoteReply, ...] = (),
    unreachable: tuple[int, ...] = (),
    sent_ms: int | None = 100,
    voters: tuple[int, ...] = (2, 3),
) -> Ballot:
    """Node 1's ballot (among 1, 2 and 3 unless told), its election_wait running out at 50."""
    b = Ballot(pre_vote, 3, 0, 50, frozenset(voters), 0, sent_ms=sent_ms)
    b.replies.update({r.sender: r for r in replies})
    b.unreachable.update(unreachable)
    return b


REFUSED = vote(2, granted=False)
FIVE = ClusterConfig.create({i: str(i) for i in range(1, 6)}, min_insync=1)


@pytest.mark.parametrize(
    ("config", "the_ballot", "trigger", "now", "expected"),
    [
        # a majority of grants decides on the reply that makes it, in either mode
        (FAILSTOP, round_of(replies=(vote(2),)), Trigger.REPLY, 110, WON),
        (QUORUM, round_of(replies=(vote(2),)), Trigger.REPLY, 110, WON),
        # only a reply decides early: anything else waits for every voter
        (QUORUM, round_of(replies=(vote(2),)), Trigger.CHANGE, 110, PENDING),
        # a loss so far does not decide before every voter is accounted for ...
        (FAILSTOP, round_of(replies=(REFUSED,)), Trigger.REPLY, 110, PENDING),
        (FAILSTOP, round_of(replies=(REFUSED,)), Trigger.CHANGE, 110, PENDING),
        # ... or election_wait has passed
        (FAILSTOP, round_of(replies=(REFUSED,)), Trigger.DEADLINE, 110, LOST),
        (FAILSTOP, round_of(replies=(REFUSED,), unreachable=(3,)), Trigger.CHANGE, 110, LOST),
        # a loss a slow voter may turn waits a lease after the requests left
        (QUORUM, round_of(replies=(REFUSED,)), Trigger.DEADLINE, 299, WAIT),
        (QUORUM, round_of(replies=(REFUSED,)), Trigger.DEADLINE, 300, LOST),
        (QUORUM, round_of(replies=(REFUSED,), unreachable=(3,)), Trigger.CHANGE, 110, LOST),
        # requests not known to have left: the lease counts from election_wait's end
        (QUORUM, round_of(replies=(REFUSED,), sent_ms=None), Trigger.DEADLINE, 249, WAIT),
        (QUORUM, round_of(replies=(REFUSED,), sent_ms=None), Trigger.DEADLINE, 250, LOST),
        # fail-stop without a majority: a silent ISR* member keeps it pending until a
        # lease after the requests left shows it cannot answer
        (FAILSTOP, round_of(), Trigger.DEADLINE, 299, PENDING),
        (FAILSTOP, round_of(), Trigger.DEADLINE, 300, WON),
        (FAILSTOP, round_of(sent_ms=None), Trigger.DEADLINE, 5000, PENDING),
        # a pre-vote is advisory: it decides on the reply that wins it, majority or not;
        # a real vote without a majority waits for every voter or election_wait
        (FAILSTOP, round_of(True, replies=(vote(2),)), Trigger.REPLY, 110, WON),
        (FIVE, round_of(True, replies=(vote(2),), voters=(2, 3, 4, 5)), Trigger.REPLY, 300, WON),
        (FIVE, round_of(replies=(vote(2),), voters=(2, 3, 4, 5)), Trigger.REPLY, 300, PENDING),
    ],
)
def test_judge(
    config: ClusterConfig, the_ballot: Ballot, trigger: Trigger, now: int, expected: Outcome
) -> None:
    decision = the_ballot.judge(
        vote(1), config, trigger, heard_ms={}, lease_leader=0, now_ms=now, lease_ms=LEASE
    )
    assert decision.outcome is expected


def test_requests_leave_with_the_first_ready_handed_out_once_it_is_durable() -> None:
    b = round_of(sent_ms=None)
    b.handed_out(4, 10, leaves_now=False)
    b.synced_through(3, 20)
    assert b.sent_ms is None  # an earlier Ready's fsync says nothing of ours
    b.synced_through(4, 30)
    b.handed_out(5, 40, leaves_now=True)
    b.synced_through(6, 50)
    assert (b.handed_seq, b.sent_ms) == (4, 30)
    quick = round_of(sent_ms=None)
    quick.handed_out(7, 60, leaves_now=True)  # nothing to write: they leave at once
    assert quick.sent_ms == 60


def test_silence_through_the_pre_vote_carries_into_the_vote() -> None:
    pre = Ballot(True, 3, 0, 50, frozenset({2, 3, 4}), 0, sent_ms=100)
    pre.replies[3] = vote(3)
    vote_round = round_of(sent_ms=None)
    vote_round.carry_silence(pre, {2: 150, 4: 50})
    assert vote_round.quiet_from == {4: 100}  # 2 spoke since, 3 answered
    after_vote = round_of(sent_ms=None)
    after_vote.carry_silence(round_of(), {})
    assert after_vote.quiet_from == {}  # only a pre-vote's silence carries


@pytest.mark.parametrize(
    ("ids", "node_id", "lost", "drawn", "expected"),
    [
        ((1,), 1, 0, 0.5, 0),  # alone: no wait
        ((1, 2, 3), 1, 0, 0.5, 50),  # window 300: node 1's slot is [0, 100)
        ((1, 2, 3), 3, 0, 0.0, 200),  # node 3's slot starts at 200
        ((2, 3), 2, 0, 0.0, 0),  # node 1 dead: node 2 takes the first slot
        ((1, 2, 3), 3, 1, 0.5, 300),  # lost once: random over twice the window
        ((1, 2, 3), 3, 8, 0.5, 400),  # lost many times: capped at 800
    ],
)
def test_election_delay(
    ids: tuple[int, ...], node_id: int, lost: int, drawn: float, expected: int
) -> None:
    assert election_delay(ids, node_id, 300, lost, 800, lambda: drawn) == expected


@pytest.mark.parametrize(
    ("in_pre_vote", "we_may_win", "ours", "theirs", "expected"),
    [
        (False, True, (1, 5, 2), (1, 5, 1), True),  # a real vote refuses every pre-vote
        (False, False, (1, 5, 2), (1, 5, 1), True),
        (True, False, (1, 9, 1), (1, 5, 2), False),  # we cannot win: never in its way
        (True, True, (1, 5, 1), (1, 5, 2), True),  # same log: the lower id goes first
        (True, True, (1, 5, 2), (1, 5, 1), False),
        (True, True, (1, 6, 2), (1, 5, 1), True),  # a longer log goes first
        (True, True, (1, 5, 1), (2, 1, 2), False),  # theirs is newer: it goes first
    ],
)
def test_outranks(
    in_pre_vote: bool,
    we_may_win: bool,
    ours: tuple[int, int, int],
    theirs: tuple[int, int, int],
    expected: bool,
) -> None:
    assert outranks(in_pre_vote, we_may_win=we_may_win, ours=ours, theirs=theirs) is expected


@pytest.mark.parametrize(
    ("config", "candidate", "expected"),
    [
        (QUORUM, 3, True),
        (FAILSTOP, 3, True),
        (ClusterConfig.create({1: "a", 2: "b"}, min_insync=1).with_isr(frozenset({1})), 2, False),
    ],
)
def test_may_win_on(config: ClusterConfig, candidate: int, expected: bool) -> None:
    assert may_win_on(config, candidate) is expected
