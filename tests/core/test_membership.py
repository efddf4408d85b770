"""A removed member learns it was removed, and non-members have no say.

The scenario of the issue: node 4 of 4 is removed and left running; then nodes
1 to 3 all crash and restart. Node 4 must never lead (it used to win alone,
never restarted and in ISR* of the view it kept), and 1 to 3 elect among
themselves with nothing committed lost.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from coord.core.config import AddMember, RemoveMember
from coord.core.errors import ChangeInFlight, LocalProtocolError, RemoteProtocolError
from coord.core.messages import Append, AppendReply, VoteRequest
from coord.core.node import Role
from coord.testing.harness import TEST_SETTINGS, CoreCluster

LEASE = TEST_SETTINGS.lease_ms


def four() -> tuple[CoreCluster, int]:
    cluster = CoreCluster(4)
    leader = cluster.elect()
    assert leader != 4
    for n in range(5):
        cluster.propose(b"before %d" % n)
    cluster.run(100)
    return cluster, leader


def remove(cluster: CoreCluster, leader: int, member: int) -> int:
    index, _ = cluster.node(leader).propose_config_change(RemoveMember(member), cluster.now)
    cluster.flush(leader)
    return index


def four_without_4() -> CoreCluster:
    """Four nodes, then node 4 removed (the removal committed); node 4 keeps running."""
    cluster, leader = four()
    index = remove(cluster, leader, 4)
    assert cluster.run_until(lambda: committed(cluster, leader, index))
    return cluster


def committed(cluster: CoreCluster, leader: int, index: int) -> bool:
    return cluster.node(leader).commit >= index


def run_watching(cluster: CoreCluster, ms: int, node_id: int) -> None:
    """Run ``ms``; the node must never campaign nor lead meanwhile."""
    end = cluster.now + ms
    while cluster.now < end:
        cluster.step()
        assert cluster.node(node_id).role is Role.FOLLOWER, f"node {node_id} campaigns"


def test_a_removed_member_learns_it_and_never_leads_when_the_rest_restart() -> None:
    cluster = four_without_4()
    node4 = cluster.node(4)
    assert node4.removed and node4.status(cluster.now).role == "removed"
    after, _ = cluster.propose(b"after the removal")
    assert cluster.run_until(lambda: cluster.committed_everywhere(after, [1, 2, 3]))
    run_watching(cluster, 5 * LEASE, 4)
    for member in (1, 2, 3):
        cluster.crash(member)
    run_watching(cluster, 10 * LEASE, 4)
    for member in (1, 2, 3):
        cluster.restart(member)
    new_leader = cluster.elect()
    assert new_leader in (1, 2, 3)
    run_watching(cluster, 2 * LEASE, 4)
    payloads = {
        e.payload for e in cluster.shells[new_leader].storage.entries(1, after + 1, 1 << 20)
    }
    assert {b"before %d" % n for n in range(5)} | {b"after the removal"} <= payloads
    last, _ = cluster.propose(b"after the restart")
    assert cluster.run_until(lambda: cluster.committed_everywhere(last, [1, 2, 3]))


def test_the_removal_waits_for_the_removed_member_to_hold_it() -> None:
    cluster, leader = four()
    cluster.pause(4)
    index = remove(cluster, leader, 4)
    cluster.run(LEASE // 2)
    assert not committed(cluster, leader, index), "node 4 has not acked its removal yet"
    cluster.resume(4)
    assert cluster.run_until(lambda: committed(cluster, leader, index))
    assert cluster.node(4).removed
    assert cluster.shells[4].storage.last_index() >= index


def test_the_removal_stops_waiting_for_a_member_silent_for_a_lease() -> None:
    cluster, leader = four()
    cluster.pause(4)
    index = remove(cluster, leader, 4)
    assert cluster.run_until(lambda: committed(cluster, leader, index), 2 * LEASE)
    assert 4 not in cluster.node(leader).inspect().peer_ids
    cluster.resume(4)
    cluster.run(LEASE)
    assert cluster.node(4).restarted, "its pause was a stall: it cannot vouch for its view"
    for member in (1, 2, 3):
        cluster.crash(member)
    cluster.run(10 * LEASE)
    assert cluster.leaders() == [], "node 4 must not win alone on a stale view"
    for member in (1, 2, 3):
        cluster.restart(member)
    assert cluster.elect() in (1, 2, 3)


def test_a_removal_while_the_member_is_down_still_commits() -> None:
    cluster, leader = four()
    cluster.crash(4)
    cluster.run(50)
    index = remove(cluster, leader, 4)
    assert cluster.run_until(lambda: committed(cluster, leader, index), LEASE)
    after, _ = cluster.propose(b"without node 4")
    assert cluster.run_until(lambda: cluster.committed_everywhere(after, [1, 2, 3]))


def test_a_new_leader_still_waits_for_the_member_being_removed() -> None:
    """The removal reached 2 and 3, not 4, when the leader crashed: the next leader sends it."""
    cluster, leader = four()
    assert leader == 1
    cluster.pause(4)
    index = remove(cluster, leader, 4)
    cluster.run(TEST_SETTINGS.heartbeat_ms)
    assert all(cluster.shells[i].storage.last_index() >= index for i in (2, 3))
    cluster.crash(1)
    new_leader = cluster.elect()
    assert 4 in cluster.node(new_leader).inspect().peer_ids
    cluster.resume(4)
    assert cluster.run_until(lambda: cluster.node(4).removed)
    assert cluster.run_until(lambda: committed(cluster, new_leader, index))


def test_a_removed_member_stays_removed_across_a_restart() -> None:
    cluster = four_without_4()
    cluster.crash(4)
    cluster.restart(4)
    assert cluster.node(4).removed
    assert cluster.node(4).status(cluster.now).role == "removed"
    run_watching(cluster, 5 * LEASE, 4)


def test_a_removed_member_grants_no_vote_and_keeps_its_term() -> None:
    cluster = four_without_4()
    node4 = cluster.node(4)
    term = node4.term
    request = VoteRequest(term + 5, 2, False, 1, term + 4, 10**6, 10**6, term + 4, 0)
    node4.receive(request, cluster.now + 10 * LEASE)
    assert node4.term == term and node4.voted_for != 2
    (_, reply), *_ = node4.ready().messages
    assert not reply.granted


def test_votes_from_a_non_member_are_not_granted_and_adopt_nothing() -> None:
    cluster = four_without_4()
    node2 = cluster.node(2)
    term = node2.term
    view = node2.view
    assert view is not None
    for pre_vote in (True, False):
        request = VoteRequest(term + 1, 4, pre_vote, 1, term, 10**6, 1, 0, 0)
        node2.receive(request, cluster.now + 10 * LEASE)
        assert node2.term == term and node2.voted_for != 4
        (to, reply), *_ = node2.ready().messages
        assert to == 4 and not reply.granted and reply.epoch == view.epoch


def test_appends_from_a_non_member_are_refused_unless_its_view_is_newer() -> None:
    cluster = four_without_4()
    node2 = cluster.node(2)
    view = node2.view
    assert view is not None
    stale = Append(view.epoch_term, 4, 0, 0, (), 0, view.epoch, tuple(view.config.isr), 0, 0)
    with pytest.raises(RemoteProtocolError, match="not a member"):
        node2.receive(stale, cluster.now)
    # A leader added in a config node 2 has not seen yet: its view is newer.
    newer = Append(node2.term + 1, 9, 0, 0, (), 0, view.epoch + 5, (1, 2, 9), 0, 0)
    node2.receive(newer, cluster.now)
    assert node2.leader_id == 9


def test_a_joining_node_without_a_view_hears_its_leader() -> None:
    cluster, leader = four()
    cluster.add_node(5)
    node5 = cluster.node(5)
    assert node5.view is None and not node5.removed
    msg = Append(cluster.node(leader).term, leader, 0, 0, (), 0, 1, (1, 2, 3, 4), 0, 0)
    node5.receive(msg, cluster.now)
    assert node5.leader_id == leader


def test_the_shell_hears_members_a_leaving_member_and_owed_answers_only() -> None:
    """Node.will_hear: what the shell lets through before anything reaches the core."""
    cluster, leader = four()
    node = cluster.node(leader)
    term = node.term
    reply = AppendReply(term, 4, True, 1, 0, 0, -1, 0)
    assert node.will_hear(2, [reply]) and node.will_hear(4, [reply])
    remove(cluster, leader, 4)
    assert node.will_hear(4, [replace(reply, sender=4)]), "it still acks its removal"
    stranger = replace(reply, sender=9)
    assert not node.will_hear(9, [stranger]) and not node.will_hear(9, [])
    vote = VoteRequest(term + 1, 9, False, 1, term, 100, 1, term, 0)
    assert node.will_hear(9, [vote]), "a vote request is owed its 'not granted'"
    assert not node.will_hear(9, [vote, stranger]), "a batch is heard whole or not at all"


def test_a_late_snapshot_ack_to_a_re_added_members_earlier_bookkeeping_is_ignored() -> None:
    """Simulator quorum --membership --max-delay-ms 50 seed 95: a snapshot was ordered for
    node 3, node 3 was removed and added back in the same term (new bookkeeping, no
    order), then its ack of the first snapshot arrived. Honest: ignored, not refused.
    A snapshot ack from a peer never sent one this term is still refused."""
    cluster = CoreCluster(3)
    leader = cluster.elect()
    cluster.run(100)
    node = cluster.node(leader)
    term = node.term
    peer, other = (i for i in (1, 2, 3) if i != leader)
    cluster.isolate(peer)  # it gets neither the entries below nor its snapshot
    last = max(cluster.propose(b"%d" % n)[0] for n in range(30))
    assert cluster.run_until(lambda: cluster.committed_everywhere(last, [leader, other]))
    cluster.shells[leader].compact(0)

    def ordered() -> bool:
        state = node.inspect().peer(peer)
        return state is not None and state.snapshot_ordered

    cluster.heal()  # a snapshot is ordered only for a follower heard within a lease
    assert cluster.run_until(ordered)
    cluster.isolate(peer)
    cluster.inbox[peer].clear()  # and this one never reaches it
    index = remove(cluster, leader, peer)
    assert cluster.run_until(lambda: committed(cluster, leader, index), 2 * LEASE)
    node.propose_config_change(AddMember(peer, f"node{peer}:7000"), cluster.now)  # re-added
    assert node.term == term and node.role is Role.LEADER  # the same term
    late = AppendReply(node.term, peer, True, node.commit, 0, 0, -1, 0)
    node.receive(late, cluster.now)
    fresh = node.inspect().peer(peer)
    assert fresh is not None and fresh.match == 0  # nothing of it counted
    forged = AppendReply(node.term, other, True, node.commit, 0, 0, -1, 0)
    with pytest.raises(RemoteProtocolError, match="no snapshot was ordered"):
        node.receive(forged, cluster.now)


def test_a_higher_term_reply_from_a_member_being_removed_is_ignored_after_stepping_down() -> None:
    """Simulator quorum --nodes 5 --membership -d100 --fsync-ms 20 seed 67: the leader
    wrote the removal of node 4, stalled and stepped down (its bookkeeping gone), then
    node 4, meanwhile in a higher term, answered one of its queued Appends. Honest:
    ignored, neither refused nor adopted; a stranger's reply is still refused."""
    cluster, leader = four()
    node = cluster.node(leader)
    term = node.term
    node.propose_config_change(RemoveMember(4), cluster.now)
    node.ready()  # the removal is handed out; it commits nowhere yet
    cluster.now += TEST_SETTINGS.stall_ms + 10
    node.tick(cluster.now)  # a stall: the leader steps down
    assert node.role is not Role.LEADER and 4 not in node.view.config.member_ids
    late = AppendReply(term + 1, 4, False, 0, 1, 0, 5, 0)
    node.receive(late, cluster.now)
    assert node.term == term
    with pytest.raises(RemoteProtocolError, match="not a member"):
        node.receive(replace(late, sender=9), cluster.now)


def test_a_second_change_before_the_first_commits_is_refused_as_retryable() -> None:
    """One change at a time; the refusal says it will pass by itself (the admin service
    answers it UNAVAILABLE so that chatctl tries again), and it does once the first commits."""
    cluster, leader = four()
    node = cluster.node(leader)
    index, _ = node.propose_config_change(RemoveMember(4), cluster.now)
    with pytest.raises(ChangeInFlight, match="not committed yet"):
        node.propose_config_change(AddMember(5, "node5:7000"), cluster.now)
    with pytest.raises(LocalProtocolError, match="cannot remove itself") as lasting:
        node.propose_config_change(RemoveMember(leader), cluster.now)
    assert not isinstance(lasting.value, ChangeInFlight), "never made: no use retrying"
    assert cluster.run_until(lambda: node.commit >= index)
    node.propose_config_change(AddMember(5, "node5:7000"), cluster.now)
