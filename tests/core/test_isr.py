"""Commit, ISR shrink and grow, the restarted flag, claim by claim (coord/PROTOCOL.md §4-§6)."""

from __future__ import annotations

from coord.testing.harness import TEST_SETTINGS, CoreCluster

LEASE = TEST_SETTINGS.lease_ms


def steady(n: int = 3, min_insync: int = 1) -> tuple[CoreCluster, int]:
    cluster = CoreCluster(n, min_insync=min_insync)
    leader = cluster.elect()
    cluster.run(100)
    return cluster, leader


def isr(cluster: CoreCluster, node_id: int) -> set[int]:
    view = cluster.node(node_id).view
    assert view is not None
    return set(view.config.isr)


def test_an_entry_commits_only_once_every_isr_member_holds_it() -> None:
    cluster, leader = steady()
    cluster.pause(3)
    index, _ = cluster.propose(b"a")
    cluster.run(LEASE // 2)
    assert cluster.node(leader).commit < index, "node 3 is in the ISR and has not acked"
    cluster.resume(3)
    assert cluster.run_until(lambda: cluster.committed_everywhere(index))


def test_a_new_leader_commits_through_a_noop_of_its_own_term() -> None:
    cluster, leader = steady()
    entries = [e for e in cluster.shells[leader].storage.entries(1, 4, 10_000)]
    assert [e.kind.name for e in entries] == ["CONFIG", "NOOP", "CONFIG"]


def test_a_follower_refusing_connections_leaves_the_isr_at_once() -> None:
    cluster, leader = steady()
    cluster.crash(3)
    cluster.run(2 * TEST_SETTINGS.heartbeat_ms)
    assert isr(cluster, leader) == {1, 2}
    index, _ = cluster.propose(b"a")
    assert cluster.run_until(lambda: cluster.committed_everywhere(index), 100)


def test_a_silent_follower_leaves_the_isr_lease_ms_after_an_unanswered_heartbeat() -> None:
    cluster, leader = steady()
    cluster.pause(3)
    cluster.run(LEASE - 3 * TEST_SETTINGS.heartbeat_ms)
    assert isr(cluster, leader) == {1, 2, 3}
    cluster.run(3 * TEST_SETTINGS.heartbeat_ms + 20)
    assert isr(cluster, leader) == {1, 2}


def test_the_isr_never_shrinks_below_min_insync_and_writes_then_wait() -> None:
    cluster, leader = steady(min_insync=2)
    cluster.crash(2)
    cluster.crash(3)
    index, _ = cluster.propose(b"a")
    cluster.run(3 * LEASE)
    assert len(isr(cluster, leader)) == 2
    assert cluster.node(leader).commit < index


def test_a_caught_up_follower_grows_back_into_the_isr() -> None:
    cluster, leader = steady()
    cluster.crash(3)
    for n in range(20):
        cluster.propose(b"%d" % n)
    cluster.run(100)
    assert isr(cluster, leader) == {1, 2}
    cluster.restart(3)
    assert cluster.run_until(lambda: isr(cluster, leader) == {1, 2, 3})
    assert cluster.shells[3].applied_index >= cluster.node(leader).commit - 1


def test_restarted_is_set_at_start_and_cleared_by_a_current_config_with_the_node_in_it() -> None:
    cluster, leader = steady()
    cluster.crash(3)
    cluster.run(100)
    cluster.restart(3)
    assert cluster.node(3).restarted
    assert cluster.run_until(lambda: not cluster.node(3).restarted)
    assert 3 in isr(cluster, leader)
    assert cluster.node(3).log.stable_last >= cluster.node(leader).view.epoch


def test_a_stall_longer_than_stall_ms_sets_restarted_and_a_shorter_one_does_not() -> None:
    cluster, _ = steady()
    cluster.pause(3)
    cluster.step(TEST_SETTINGS.stall_ms - 5)
    cluster.resume(3)
    cluster.step(1)
    assert not cluster.node(3).restarted
    cluster.pause(3)
    cluster.step(TEST_SETTINGS.stall_ms + 5)
    cluster.resume(3)
    cluster.step()
    assert cluster.node(3).restarted
    assert cluster.run_until(lambda: not cluster.node(3).restarted)


def test_messages_that_queued_during_a_stall_do_not_clear_restarted() -> None:
    cluster, leader = steady()
    cluster.pause(3)
    cluster.run(2 * LEASE)
    queued = len(cluster.inbox[3])
    assert queued > 0
    cluster.resume(3)
    cluster.deliver(3)
    assert cluster.node(3).restarted, "those Appends predate the node's wake-up"
    assert 3 not in isr(cluster, leader)
