"""Failures and the ways out: full restarts, woken leaders, truncation, snapshots, operators."""

from __future__ import annotations

import pytest

from coord.core.config import AddMember, RemoveMember
from coord.core.errors import LocalProtocolError, Redirect
from coord.core.messages import InstallSnapshot, Message
from coord.core.node import Role
from coord.testing.harness import TEST_SETTINGS, CoreCluster

LEASE = TEST_SETTINGS.lease_ms


def steady(n: int = 3, min_insync: int = 1) -> tuple[CoreCluster, int]:
    cluster = CoreCluster(n, min_insync=min_insync)
    leader = cluster.elect()
    cluster.run(100)
    return cluster, leader


def survivor_holds_the_only_copy() -> tuple[CoreCluster, int]:
    """Nodes 3 then 2 crash; node 1 alone commits an entry; then 1 crashes too."""
    cluster, leader = steady()
    assert leader == 1
    cluster.crash(3)
    cluster.run(50)
    cluster.crash(2)
    cluster.run(50)
    index, _ = cluster.propose(b"only on node 1")
    assert cluster.run_until(lambda: cluster.shells[1].applied_index >= index)
    cluster.crash(1)
    return cluster, index


def test_after_a_full_restart_the_two_without_the_newest_epoch_do_not_elect() -> None:
    cluster, index = survivor_holds_the_only_copy()
    cluster.restart(2)
    cluster.restart(3)
    cluster.run(10 * LEASE)
    assert cluster.leaders() == []
    cluster.restart(1)
    assert cluster.elect() == 1
    assert cluster.run_until(lambda: cluster.committed_everywhere(index))
    payloads = [e.payload for e in cluster.shells[3].storage.entries(1, index + 1, 10**6)]
    assert b"only on node 1" in payloads


def test_force_leader_is_the_operator_way_out_when_the_survivor_is_gone_for_good() -> None:
    cluster, _ = survivor_holds_the_only_copy()
    cluster.restart(2)
    cluster.restart(3)
    cluster.run(2 * LEASE)
    cluster.node(2).force_leader(cluster.now)
    cluster.flush(2)
    assert cluster.leader() == 2 and cluster.node(2).view.config.isr == {2}
    new, _ = cluster.propose(b"after the loss")
    assert cluster.run_until(lambda: cluster.committed_everywhere(new))
    assert cluster.run_until(lambda: cluster.node(2).view.config.isr == {2, 3})


def test_force_leader_is_refused_while_a_live_leader_holds_our_lease() -> None:
    cluster, _ = steady()
    with pytest.raises(LocalProtocolError):
        cluster.node(2).force_leader(cluster.now)


def test_a_leader_woken_from_a_pause_steps_down_and_its_unreplicated_write_is_cut() -> None:
    cluster, old = steady()
    cluster.pause(old)
    index, term = cluster.node(old).propose(b"never acknowledged", cluster.now)
    others = [i for i in (1, 2, 3) if i != old]
    assert cluster.run_until(lambda: any(cluster.node(i).role is Role.LEADER for i in others))
    new = next(i for i in others if cluster.node(i).role is Role.LEADER)
    committed, _ = cluster.node(new).propose(b"the new leader's", cluster.now)
    cluster.flush(new)
    cluster.resume(old)
    cluster.step()
    assert cluster.node(old).role is Role.FOLLOWER
    with pytest.raises(Redirect):
        cluster.node(old).propose(b"late", cluster.now)
    assert cluster.run_until(lambda: cluster.committed_everywhere(committed))
    stored = cluster.shells[old].storage.entries(index, index + 1, 10**6)[0]
    assert stored.term != term and stored.payload != b"never acknowledged"


def test_a_conflicting_suffix_is_truncated_on_the_follower() -> None:
    cluster, old = steady(min_insync=2)
    cluster.isolate(old)
    stale = [cluster.node(old).propose(b"stale %d" % n, cluster.now) for n in range(3)]
    cluster.flush(old)
    assert cluster.run_until(lambda: any(cluster.node(i).role is Role.LEADER for i in (2, 3)))
    new = next(i for i in (2, 3) if cluster.node(i).role is Role.LEADER)
    fresh, _ = cluster.node(new).propose(b"fresh", cluster.now)
    cluster.flush(new)
    cluster.heal()
    assert cluster.run_until(lambda: cluster.committed_everywhere(fresh))
    log = cluster.shells[old].storage
    for index, term in stale:
        assert log.term(index) != term


def test_a_follower_behind_the_compacted_log_gets_a_snapshot() -> None:
    cluster, leader = steady()
    cluster.crash(3)
    last = max(cluster.propose(b"%d" % n)[0] for n in range(30))
    assert cluster.run_until(lambda: cluster.committed_everywhere(last))
    for node_id in (1, 2):
        cluster.shells[node_id].compact(0)
    cluster.restart(3)
    assert cluster.run_until(lambda: cluster.committed_everywhere(last, [3]))
    assert cluster.shells[3].storage.snapshot().index >= last
    state = cluster.shells[leader]
    assert (cluster.shells[3].applied_index, cluster.shells[3].checksum) == (
        state.applied_index,
        state.checksum,
    )
    index, _ = cluster.propose(b"after the snapshot")
    assert cluster.run_until(lambda: cluster.committed_everywhere(index))


def test_a_silent_follower_is_sent_no_snapshot_until_it_answers_again() -> None:
    """A snapshot costs the leader a copy of its whole state: none goes to a follower that
    has not answered within a lease, however long it is down; its first answer after
    the restart brings the one it needs."""
    cluster, _ = steady()
    cluster.crash(3)
    cluster.run(2 * LEASE)
    last = max(cluster.propose(b"%d" % n)[0] for n in range(30))
    assert cluster.run_until(lambda: cluster.committed_everywhere(last))
    for node_id in (1, 2):
        cluster.shells[node_id].compact(0)
    cluster.run(5 * LEASE)

    def snapshots_to_3() -> list[Message]:
        return [m for _, to, m in cluster.sent if to == 3 and isinstance(m, InstallSnapshot)]

    assert snapshots_to_3() == []
    cluster.restart(3)
    assert cluster.run_until(lambda: cluster.committed_everywhere(last, [3]))
    assert len(snapshots_to_3()) == 1


def test_leadership_transfers_to_a_caught_up_follower_without_waiting_for_leases() -> None:
    cluster, leader = steady()
    started = cluster.now
    cluster.node(leader).transfer_leadership(2, cluster.now)
    cluster.flush(leader)
    with pytest.raises(Redirect):
        cluster.node(leader).propose(b"x", cluster.now)
    assert cluster.run_until(lambda: cluster.leaders() == [2])
    assert cluster.now - started < LEASE // 2
    index, _ = cluster.propose(b"on the new leader")
    assert cluster.run_until(lambda: cluster.committed_everywhere(index))


def test_transfer_only_to_an_in_sync_follower() -> None:
    cluster, leader = steady()
    cluster.crash(3)
    cluster.run(50)
    with pytest.raises(LocalProtocolError):
        cluster.node(leader).transfer_leadership(3, cluster.now)


def test_members_join_outside_the_isr_grow_into_it_and_leave_one_change_at_a_time() -> None:
    cluster, leader = steady()
    cluster.add_node(4)
    node = cluster.node(leader)
    node.propose_config_change(AddMember(4, "node4:7000"), cluster.now)
    assert 4 in node.view.config.member_ids and 4 not in node.view.config.isr
    with pytest.raises(LocalProtocolError):
        node.propose_config_change(RemoveMember(3), cluster.now)
    cluster.flush(leader)
    assert cluster.run_until(lambda: node.view.config.isr == {1, 2, 3, 4})
    assert cluster.run_until(lambda: node.commit >= node.view.epoch)
    node.propose_config_change(RemoveMember(3), cluster.now)
    cluster.flush(leader)
    assert node.view.config.member_ids == (1, 2, 4) and node.view.config.isr == {1, 2, 4}
    index, _ = cluster.propose(b"four minus one")
    assert cluster.run_until(lambda: cluster.committed_everywhere(index, [1, 2, 4]))
    with pytest.raises(LocalProtocolError):
        node.propose_config_change(RemoveMember(leader), cluster.now)


def test_force_leader_is_refused_on_the_leader_itself() -> None:
    """Forcing a node that already leads would only bump the term and unsettle clients."""
    cluster = CoreCluster(3)
    leader = cluster.elect()
    term = cluster.node(leader).term
    with pytest.raises(LocalProtocolError, match="already leads"):
        cluster.node(leader).force_leader(cluster.now)
    assert cluster.node(leader).term == term


def test_force_leader_is_refused_in_the_first_lease_after_a_restart() -> None:
    """A fresh process's lease is on a leader it cannot name: its previous life may have
    promised one that still counts on it. force-leader waits for it like a vote does."""
    cluster, _ = survivor_holds_the_only_copy()
    cluster.restart(2)
    cluster.restart(3)
    with pytest.raises(LocalProtocolError, match="started less than a lease ago"):
        cluster.node(2).force_leader(cluster.now)
    cluster.run(LEASE)
    cluster.node(2).force_leader(cluster.now)
    cluster.flush(2)
    assert cluster.leader() == 2
