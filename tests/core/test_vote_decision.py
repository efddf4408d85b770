"""The vote decision as a table: responders -> won / lost / waiting, and the reason given
(coord/core/election.py, DESIGN.md section 3), in the style of etcd raft's quorum tests."""

from __future__ import annotations

import pytest

from coord.core.config import ClusterConfig
from coord.core.election import Decision, decide
from coord.core.messages import VoteReply

FAILSTOP = ClusterConfig.create({1: "a", 2: "b", 3: "c"}, min_insync=1)
QUORUM = ClusterConfig.create({1: "a", 2: "b", 3: "c"}, min_insync=2)


def vote(
    sender: int,
    *,
    granted: bool = True,
    epoch: int = 5,
    isr: tuple[int, ...] = (1, 2, 3),
    restarted: bool = False,
    live: bool = False,
) -> VoteReply:
    return VoteReply(
        term=2,
        sender=sender,
        pre_vote=False,
        campaign=0,
        granted=granted,
        last_log_term=1,
        last_log_index=epoch,
        epoch=epoch,
        epoch_term=1,
        isr=isr,
        restarted=restarted,
        has_live_leader=live,
        leader_id=0,
    )


R = True  # restarted
WON, LOST = True, False


@pytest.mark.parametrize(
    ("config", "replies", "accounted", "competing", "expected"),
    [
        # quorum mode: a majority of grants, whoever answered
        (QUORUM, [vote(1), vote(2)], None, (), Decision(WON, "2 of 3 granted", frozenset({1, 2}))),
        (QUORUM, [vote(1)], None, (), Decision(LOST, "only 1 of 3 granted", final=False)),
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
            Decision(LOST, "ISR* members [3] may still answer", waiting=True, final=False),
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
            Decision(LOST, "epoch 5 not proven latest: [3] silent", final=False),
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
