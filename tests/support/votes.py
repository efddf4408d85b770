"""Vote replies for election tests: a voter's whole statement, with defaults for a steady
three-member cluster at epoch 5, and that cluster's configuration in each mode."""

from __future__ import annotations

from coord.core.config import ClusterConfig
from coord.core.messages import VoteReply

FAILSTOP = ClusterConfig.create({1: "a", 2: "b", 3: "c"}, min_insync=1)
QUORUM = ClusterConfig.create({1: "a", 2: "b", 3: "c"}, min_insync=2)


def vote_reply(
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
