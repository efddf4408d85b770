"""Leases on a fake clock: expiry, renewal, refusal, the leader's own lease, stalls."""

from __future__ import annotations

import pytest

from coord.core.errors import Redirect
from coord.core.lease import FollowerLease, leader_lease_holds, quorum_heard
from coord.core.node import Role
from coord.testing.harness import TEST_SETTINGS, CoreCluster

LEASE = TEST_SETTINGS.lease_ms


def test_a_follower_lease_lasts_lease_ms_from_the_heartbeat_and_blocks_other_candidates() -> None:
    lease = FollowerLease(0, 0)
    lease.grant(1, 1000, LEASE)
    assert lease.live(1000 + LEASE - 1) and not lease.live(1000 + LEASE)
    assert lease.blocks(candidate=2, transfer_from=0, now_ms=1100)
    assert not lease.blocks(candidate=1, transfer_from=0, now_ms=1100)
    assert not lease.blocks(candidate=2, transfer_from=1, now_ms=1100)
    lease.void()
    assert not lease.blocks(candidate=2, transfer_from=0, now_ms=1100)


def test_a_fresh_process_keeps_a_lease_on_whoever_its_past_life_promised() -> None:
    lease = FollowerLease(0, 1000 + LEASE)
    assert lease.blocks(candidate=1, transfer_from=0, now_ms=1000)


def test_the_leader_lease_counts_from_the_send_time_acked_by_every_isr_member() -> None:
    lease_ms = TEST_SETTINGS.leader_lease_ms
    assert leader_lease_holds(1000, [900, 950], [900, 950], 0, lease_ms)
    assert not leader_lease_holds(900 + lease_ms, [900, 950], [900, 950], 0, lease_ms)
    assert not leader_lease_holds(1000, [900, None], [900, None], 0, lease_ms)
    assert leader_lease_holds(10**9, [], [None, None], 0, lease_ms), "ISR of itself alone"
    assert not leader_lease_holds(1000, [], [None, None], 1, lease_ms), "quorum needs a majority"


def test_leases_renew_with_heartbeats_so_a_healthy_leader_is_never_replaced() -> None:
    cluster = CoreCluster(3)
    leader = cluster.elect()
    term = cluster.node(leader).term
    cluster.run(10 * LEASE)
    assert cluster.leaders() == [leader] and cluster.node(leader).term == term
    assert cluster.node(leader).has_lease(cluster.now)


def test_followers_elect_only_after_the_lease_of_a_silent_leader_expires() -> None:
    cluster = CoreCluster(3)
    cluster.elect()
    cluster.run(100)
    paused_at = cluster.now
    cluster.pause(1)
    cluster.run(LEASE - 30)
    assert all(cluster.node(i).role is Role.FOLLOWER for i in (2, 3))
    assert cluster.run_until(lambda: any(cluster.node(i).role is Role.LEADER for i in (2, 3)))
    assert cluster.now >= paused_at + LEASE
    # ...and soon after: candidates stagger over two heartbeats, not half a lease.
    assert cluster.now <= paused_at + LEASE + TEST_SETTINGS.election_stagger_ms + 60


def test_the_old_leader_lease_ends_before_anyone_else_can_be_elected() -> None:
    cluster = CoreCluster(3)
    old = cluster.elect()
    cluster.run(100)
    cluster.pause(old)
    assert cluster.run_until(lambda: any(cluster.node(i).role is Role.LEADER for i in (2, 3)))
    assert not cluster.node(old).has_lease(cluster.now)


def test_a_refused_connection_voids_the_lease_at_once() -> None:
    cluster = CoreCluster(3)
    cluster.elect()
    cluster.run(100)
    cluster.crash(1)
    crashed_at = cluster.now
    cluster.node(2).peer_unreachable(1, cluster.now)
    cluster.node(3).peer_unreachable(1, cluster.now)
    assert cluster.run_until(lambda: any(cluster.node(i).role is Role.LEADER for i in (2, 3)))
    assert cluster.now < crashed_at + LEASE


def test_reads_need_the_lease_and_a_committed_entry_of_the_leader_term() -> None:
    cluster = CoreCluster(3)
    leader = cluster.node(cluster.elect())
    cluster.run(100)
    assert leader.read_index(cluster.now) == leader.commit
    cluster.pause(2)
    cluster.run(LEASE)
    with pytest.raises(Redirect):
        leader.read_index(cluster.now)
    with pytest.raises(Redirect):
        cluster.node(3).read_index(cluster.now)


def test_a_leader_stalled_past_stall_ms_steps_down_and_counts_as_restarted() -> None:
    cluster = CoreCluster(3)
    leader = cluster.elect()
    cluster.run(100)
    cluster.pause(leader)
    cluster.run(TEST_SETTINGS.stall_ms + 20)
    cluster.resume(leader)
    cluster.step()
    assert cluster.node(leader).role is Role.FOLLOWER and cluster.node(leader).restarted


def test_a_leader_measures_afresh_after_a_short_stall_instead_of_dropping_followers() -> None:
    cluster = CoreCluster(3)
    leader = cluster.elect()
    cluster.run(100)
    term, epoch = cluster.node(leader).term, cluster.node(leader).view.epoch
    cluster.pause(3)
    cluster.run(LEASE - 10)
    cluster.pause(leader)
    cluster.step(2 * TEST_SETTINGS.heartbeat_ms + 5)
    cluster.resume(leader)
    cluster.resume(3)
    cluster.step(1)
    cluster.run(100)
    node = cluster.node(leader)
    assert node.role is Role.LEADER and node.term == term
    assert node.view.epoch == epoch, "the ISR never changed"


def test_a_leader_known_dead_is_replaced_within_a_few_heartbeats() -> None:
    """A refused connection proves the leader is gone, so followers stagger their
    candidacy within one heartbeat instead of the half-lease a silent leader gets."""
    cluster = CoreCluster(3)
    cluster.elect()
    cluster.run(100)
    leader = cluster.leader()
    cluster.crash(leader)
    crashed_at = cluster.now
    for node_id in cluster.shells:
        if node_id != leader:
            cluster.node(node_id).peer_unreachable(leader, cluster.now)
    assert cluster.run_until(lambda: bool(cluster.leaders()) and cluster.leader() != leader)
    assert cluster.now - crashed_at <= 3 * cluster.settings.heartbeat_ms


@pytest.mark.parametrize(
    ("heard", "needed", "holds"),
    [
        ([950, 990], 1, True),  # both heard within the window
        ([None, 990], 1, True),  # one is enough for a majority of three
        ([None, 100], 1, False),  # the only one heard is older than a lease
        ([950, None, None, 990], 2, True),  # five members: two others needed
        ([950, None, None, 100], 2, False),
        ([], 0, True),  # a cluster of one
    ],
)
def test_quorum_heard_counts_the_others_heard_within_the_window(
    heard: list[int | None], needed: int, holds: bool
) -> None:
    assert quorum_heard(1000, heard, needed, LEASE) is holds


def test_a_quorum_leader_cut_from_its_peers_steps_down_within_a_lease() -> None:
    """Check-quorum: cut off from both followers (its clients may still reach it), the
    quorum-mode leader stops calling itself leader, while the majority elects anew."""
    cluster = CoreCluster(3, min_insync=2)
    old = cluster.elect()
    cluster.run(3 * LEASE)
    assert cluster.leaders() == [old]
    cut_at = cluster.now
    cluster.isolate(old)
    assert cluster.run_until(lambda: cluster.node(old).role is not Role.LEADER, 3 * LEASE)
    assert cluster.now <= cut_at + LEASE + TEST_SETTINGS.heartbeat_ms
    assert cluster.node(old).leader_id == 0
    assert cluster.run_until(lambda: [i for i in cluster.leaders() if i != old] != [])


def test_a_fail_stop_leader_cut_from_its_peers_leads_on_with_an_isr_of_itself() -> None:
    """No check-quorum in fail-stop mode: the cut followers drop out of the ISR and the
    leader goes on (the mode's contract, PROTOCOL.md §6)."""
    cluster = CoreCluster(3)
    old = cluster.elect()
    cluster.run(LEASE)
    cluster.isolate(old)
    cluster.run(5 * LEASE)
    assert cluster.node(old).role is Role.LEADER
