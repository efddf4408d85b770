"""The contract between the core and its shell: what a Ready holds, and when."""

from __future__ import annotations

import random

import pytest

from coord.core.config import ClusterConfig
from coord.core.errors import Redirect
from coord.core.log import MemoryStorage
from coord.core.messages import Append, AppendReply
from coord.core.node import Node
from coord.testing.harness import TEST_SETTINGS, CoreCluster


def single_node_leader() -> tuple[Node, MemoryStorage, int]:
    storage = MemoryStorage()
    config = ClusterConfig.create({1: "a"})
    node = Node(1, storage, TEST_SETTINGS, random.Random(0), 0, bootstrap=config)
    now = 0
    while node.role.value != "leader":
        now += 10
        node.tick(now)
        ready = node.ready()
        storage.save(ready.hard_state, None, ready.entries)
        if ready.entries:
            node.persisted(ready.entries[-1].index, ready.entries[-1].term, now)
    return node, storage, now


def test_committed_entries_are_handed_out_only_once_durable_here() -> None:
    node, storage, now = single_node_leader()
    node.ready()
    index, term = node.propose(b"a", now)
    ready = node.ready()
    assert [e.index for e in ready.entries] == [index] and ready.committed == ()
    storage.save(ready.hard_state, None, ready.entries)
    node.persisted(index, term, now)
    assert [e.payload for e in node.ready().committed] == [b"a"]


def test_proposals_between_two_readies_share_one_batch_and_one_message_per_follower() -> None:
    cluster = CoreCluster(3)
    leader = cluster.node(cluster.elect())
    cluster.run(100)
    for n in range(100):
        leader.propose(b"%d" % n, cluster.now)
    ready = leader.ready()
    assert len(ready.entries) == 100
    appends = [(to, m) for to, m in ready.messages if isinstance(m, Append)]
    assert sorted(to for to, _ in appends) == [2, 3]
    assert all(len(m.entries) == 100 for _, m in appends)


def test_a_follower_acks_in_the_same_ready_as_the_entries_so_they_are_written_first() -> None:
    cluster = CoreCluster(3)
    cluster.elect()
    cluster.run(100)
    cluster.node(1).propose(b"a", cluster.now)
    append = next(m for t, m in cluster.node(1).ready().messages if t == 2)
    follower = cluster.node(2)
    follower.receive(append, cluster.now)
    ready = follower.ready()
    acks = [m for _, m in ready.messages if isinstance(m, AppendReply) and m.success]
    assert ready.entries and acks and acks[0].match_index == ready.entries[-1].index


def test_a_follower_refuses_proposals_and_names_the_leader() -> None:
    cluster = CoreCluster(3)
    leader = cluster.elect()
    cluster.run(50)
    with pytest.raises(Redirect) as refused:
        cluster.node(2).propose(b"a", cluster.now)
    assert refused.value.leader_id == leader


def test_status_reports_what_cluster_status_needs() -> None:
    cluster = CoreCluster(3)
    leader = cluster.elect()
    cluster.crash(3)
    cluster.run(100)
    status = cluster.node(leader).status(cluster.now)
    assert (status.role, status.leader_id, status.min_insync) == ("leader", leader, 1)
    assert status.config_epoch == cluster.node(leader).view.epoch and status.commit_index > 0
    members = {m.id: m for m in status.members}
    assert members[2].in_sync and members[2].reachable and members[2].match_index > 0
    assert not members[3].in_sync and not members[3].reachable


def test_the_core_keeps_a_bounded_window_of_a_long_log_in_memory() -> None:
    node, storage, now = single_node_leader()
    for n in range(3 * TEST_SETTINGS.cached_entries):
        node.propose(b"%d" % n, now)
        ready = node.ready()
        storage.save(ready.hard_state, None, ready.entries)
        node.persisted(ready.entries[-1].index, ready.entries[-1].term, now)
    log = node.log
    assert log.cached_count() <= TEST_SETTINGS.cached_entries
    assert log.last_index() == log.stable_last
