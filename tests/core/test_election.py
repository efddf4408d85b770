"""Elections, claim by claim (coord/PROTOCOL.md §8)."""

from __future__ import annotations

from coord.core.election import decide
from coord.core.messages import VoteReply, VoteRequest
from coord.core.node import Node, Role
from coord.testing.harness import TEST_SETTINGS, CoreCluster
from tests.support.votes import FAILSTOP, QUORUM
from tests.support.votes import vote_reply as reply


def test_failstop_wins_when_a_never_restarted_isr_member_vouches_for_the_epoch() -> None:
    decision = decide(1, {1: reply(1, restarted=True), 2: reply(2)}, FAILSTOP)
    assert decision.won and decision.isr == {1, 2}


def test_failstop_needs_the_whole_isr_when_every_responder_restarted() -> None:
    replies = {1: reply(1, restarted=True), 2: reply(2, restarted=True)}
    assert not decide(1, replies, FAILSTOP).won
    replies[3] = reply(3, restarted=True)
    assert decide(1, replies, FAILSTOP).won


def test_failstop_follows_the_latest_epoch_reported() -> None:
    replies = {1: reply(1, epoch=5), 2: reply(2, epoch=9, isr=(2,))}
    decision = decide(1, replies, FAILSTOP)
    assert not decision.won and "not in ISR*" in decision.reason
    assert decide(2, {2: reply(2, epoch=9, isr=(2,)), 1: reply(1)}, FAILSTOP).won


def test_failstop_loses_to_a_live_leader_or_a_refusing_isr_member() -> None:
    assert not decide(1, {1: reply(1), 2: reply(2, live=True)}, FAILSTOP).won
    assert not decide(1, {1: reply(1), 2: reply(2, granted=False)}, FAILSTOP).won


def test_quorum_mode_counts_a_majority_of_grants() -> None:
    assert decide(1, {1: reply(1), 2: reply(2)}, QUORUM).won
    assert not decide(1, {1: reply(1), 2: reply(2, granted=False)}, QUORUM).won
    assert not decide(1, {1: reply(1)}, QUORUM).won


def test_a_fresh_cluster_elects_once_every_member_is_up_and_lower_ids_go_first() -> None:
    for seed in range(5):
        cluster = CoreCluster(3, seed=seed)
        cluster.elect()
        # Node 1 asks first; after a collision the retries are random (back-off).
        first = next(m for _, _, m in cluster.sent if isinstance(m, VoteRequest))
        assert first.sender == 1


def test_a_fresh_cluster_with_a_member_missing_does_not_elect() -> None:
    cluster = CoreCluster(3)
    cluster.crash(3)
    cluster.run(2000)
    assert cluster.leaders() == []


def test_pre_vote_changes_no_term_and_an_isolated_node_does_not_disrupt_on_return() -> None:
    cluster = CoreCluster(3, min_insync=2)
    leader = cluster.elect()
    term = cluster.node(leader).term
    cluster.isolate(3)
    cluster.run(2000)
    assert cluster.node(3).term == term
    cluster.heal()
    cluster.run(500)
    assert cluster.leader() == leader and cluster.node(leader).term == term


def test_a_voter_replies_with_its_whole_state_and_refuses_under_a_live_lease() -> None:
    cluster = CoreCluster(3)
    cluster.elect()
    cluster.run(100)
    follower = cluster.node(2)
    request = VoteRequest(
        term=follower.term + 1,
        sender=3,
        pre_vote=False,
        campaign=7,
        last_log_term=99,
        last_log_index=99,
        epoch=0,
        epoch_term=0,
        transfer_from=0,
    )
    term = follower.term
    follower.receive(request, cluster.now)
    (to, answer), *_ = follower.ready().messages
    assert to == 3 and isinstance(answer, VoteReply)
    assert not answer.granted and answer.has_live_leader and answer.leader_id == 1
    assert answer.isr == (1, 2, 3) and answer.campaign == 7 and not answer.restarted
    assert follower.term == term, "a live lease means not even adopting the term"


def test_a_granted_vote_leaves_only_after_the_vote_is_in_the_hard_state() -> None:
    cluster = CoreCluster(3)
    cluster.elect()
    cluster.run(100)
    cluster.crash(1)
    cluster.pause(3)

    def vote_request_queued() -> bool:
        return any(isinstance(m, VoteRequest) and not m.pre_vote for m, _ in cluster.inbox[3])

    assert cluster.run_until(vote_request_queued)
    request = next(m for m, _ in cluster.inbox[3] if isinstance(m, VoteRequest) and not m.pre_vote)
    voter, candidate = cluster.node(3), 2
    voter.receive(request, cluster.now)
    ready = voter.ready()
    granted = [m for _, m in ready.messages if isinstance(m, VoteReply) and m.granted]
    assert granted and ready.hard_state is not None
    assert ready.hard_state.voted_for == candidate and ready.hard_state.term == request.term


def test_a_cluster_of_one_elects_itself_at_once_even_after_a_restart() -> None:
    """No other node can lead a one-member cluster, so no startup lease holds it back."""
    cluster = CoreCluster(1)
    quickly = cluster.settings.lease_ms // 4
    assert cluster.run_until(lambda: cluster.node(1).role is Role.LEADER, max_ms=quickly)
    cluster.crash(1)
    cluster.restart(1)
    assert cluster.run_until(lambda: cluster.node(1).role is Role.LEADER, max_ms=quickly)


def test_when_node_1_dies_node_2_campaigns_in_the_first_slot_not_after_an_empty_one() -> None:
    """A refused connection proves the leader dead: candidates stagger over one heartbeat,
    lower ids first, and the dead leader takes no slot (it used to leave node 2 waiting
    out node 1's share of the heartbeat: a third of the kill -9 failover)."""
    waits = []
    for seed in range(20):
        cluster = CoreCluster(3, seed=seed)
        if cluster.elect() != 1:
            continue
        cluster.crash(1)
        cluster.node(2).peer_unreachable(1, cluster.now)
        waits.append(ms_until_candidate(cluster, 2))
    half = TEST_SETTINGS.heartbeat_ms // 2
    assert len(waits) >= 5 and max(waits) < half, waits


def ms_until_candidate(cluster: CoreCluster, node_id: int) -> int:
    """Step the clock 1 ms at a time until node_id campaigns; how long that took."""
    started = cluster.now
    while cluster.node(node_id).role is not Role.CANDIDATE:
        assert cluster.now - started < 100, f"node {node_id} never campaigned"
        cluster.step(1)
    return cluster.now - started


def test_a_pre_vote_candidate_grants_a_rival_with_a_longer_log_and_yields() -> None:
    """Node 2 campaigns and node 3's pre-vote crosses its own. Node 2 cannot win (node 3
    refuses it: shorter log), so its lower id must not make it refuse node 3 either: the
    two used to refuse each other round after round, with no leader until the partition
    healed (seen on the network-namespace hosts: tests/netns/schedules.py)."""
    cluster = CoreCluster(3, min_insync=2)
    assert cluster.elect() == 1
    cluster.run(50)
    cluster.cut.add((1, 2))  # briefly: node 2 misses the last entries, not its ISR place
    for n in range(3):
        cluster.propose(f"not on node 2 #{n}".encode())
    cluster.step(1)
    cluster.step(1)
    cluster.isolate(1)
    lagging, ahead = cluster.node(2), cluster.node(3)
    assert ahead.log.last_index() > lagging.log.last_index()
    assert ahead.view.epoch == lagging.view.epoch, "one view: no newer view decides it"
    assert cluster.run_until(lambda: lagging.role is Role.CANDIDATE, 4 * TEST_SETTINGS.lease_ms)
    answer = crossing_pre_vote(lagging, ahead, cluster.now)
    assert answer.granted
    assert lagging.role is Role.FOLLOWER, "it gives way to the rival that can win"


def test_a_pre_vote_candidate_refuses_a_rival_it_outranks() -> None:
    """Equal logs: the lower id goes on, the other yields (the stagger's tie-break)."""
    cluster = CoreCluster(3, min_insync=2)
    assert cluster.elect() == 1
    cluster.run(50)
    cluster.isolate(1)
    node2, node3 = cluster.node(2), cluster.node(3)
    assert node2.log.last_index() == node3.log.last_index()
    assert cluster.run_until(lambda: node2.role is Role.CANDIDATE, 4 * TEST_SETTINGS.lease_ms)
    answer = crossing_pre_vote(node2, node3, cluster.now)
    assert not answer.granted
    assert node2.role is Role.CANDIDATE


def crossing_pre_vote(candidate: Node, rival: Node, now_ms: int) -> VoteReply:
    """The candidate's own pre-vote has left; the rival's arrives: the candidate's answer."""
    candidate.ready()
    request = VoteRequest(
        term=candidate.term + 1,
        sender=rival.id,
        pre_vote=True,
        campaign=7,
        last_log_term=rival.log.last_term(),
        last_log_index=rival.log.last_index(),
        epoch=rival.view.epoch,
        epoch_term=rival.view.epoch_term,
        transfer_from=0,
    )
    candidate.receive(request, now_ms)
    answer = next(m for to, m in candidate.ready().messages if to == rival.id)
    assert isinstance(answer, VoteReply)
    return answer
