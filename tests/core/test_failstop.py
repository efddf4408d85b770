"""Fail-stop safety over slow links and slow disks.

Each test is a schedule the fail-stop model allows (PROTOCOL.md, "Why
fail-stop elections are safe"): replies slower than ``election_wait`` but
inside the lease, a disk whose fsync stalls while ticks go on. The cluster
here is the harness's, with a wire that delays messages per link.
"""

from __future__ import annotations

import pytest

from coord.core.errors import LocalProtocolError
from coord.core.messages import Append, Message, VoteRequest
from coord.core.node import Node, Role
from coord.core.ready import Ready
from coord.core.ready_order import split_messages
from coord.testing.harness import TEST_SETTINGS, CoreCluster

LEASE = TEST_SETTINGS.lease_ms


class SlowCluster(CoreCluster):
    """The harness cluster with a wire: each message takes ``delay(sender, to)`` ms."""

    def __init__(self, n: int = 3, *, delay_ms: int = 0, **kwargs: object) -> None:
        self.wire: list[tuple[int, int, Message, object]] = []
        self.link_ms: dict[tuple[int, int], int] = {}
        self.delay_ms = delay_ms
        super().__init__(n, **kwargs)  # type: ignore[arg-type]

    def _enqueue(self, sender: int, to: int, msg: Message, copy: object) -> None:
        due = self.now + self.link_ms.get((sender, to), self.delay_ms)
        self.wire.append((due, to, msg, copy))

    def _arrive(self) -> None:
        due = [w for w in self.wire if w[0] <= self.now]
        self.wire = [w for w in self.wire if w[0] > self.now]
        for _, to, msg, copy in due:
            if to not in self.crashed:
                self.inbox[to].append((msg, copy))  # type: ignore[arg-type]


def request_like(node: Node, sender: int, *, pre_vote: bool, campaign: int) -> VoteRequest:
    """A vote request for node's next term from ``sender``, with node's own log and view."""
    assert node.view is not None
    return VoteRequest(
        term=node.term + 1,
        sender=sender,
        pre_vote=pre_vote,
        campaign=campaign,
        last_log_term=node.log.last_term(),
        last_log_index=node.log.last_index(),
        epoch=node.view.epoch,
        epoch_term=node.view.epoch_term,
        transfer_from=0,
    )


def leaders_by_term(cluster: CoreCluster, seen: dict[int, set[int]]) -> None:
    for node_id, shell in cluster.shells.items():
        node = shell.node
        if node_id not in cluster.crashed and node.role is Role.LEADER:
            seen.setdefault(node.term, set()).add(node_id)


def test_two_candidates_slow_to_hear_each_other_do_not_both_win_a_term() -> None:
    """The issue's 40 ms case, made certain: the leader dies (refuses), and the two
    survivors' messages to each other take 80 ms, more than election_wait (50 ms)
    and well inside the lease (200 ms). Both campaign at once. The old rule let
    each win with R = {itself} when election_wait ran out."""
    for seed in range(8):
        cluster = SlowCluster(3, delay_ms=5, seed=seed)
        leader = cluster.elect()
        cluster.run(100)
        a, b = sorted(set(cluster.shells) - {leader})
        cluster.link_ms = {(a, b): 80, (b, a): 80}
        cluster.crash(leader)
        seen: dict[int, set[int]] = {}
        for _ in range(400):
            cluster.step()
            leaders_by_term(cluster, seen)
        assert all(len(ids) == 1 for ids in seen.values()), seen
        assert len(cluster.leaders()) == 1


def test_slow_links_within_the_lease_elect_without_livelock() -> None:
    """Every link takes 80 ms (a round trip of 160 ms, inside the 200 ms lease): the
    old candidates gave up at election_wait (50 ms) on every try and nobody won."""
    cluster = SlowCluster(3, delay_ms=80)
    assert cluster.run_until(lambda: len(cluster.leaders()) == 1, 3000)
    cluster.run(500)  # the followers hear they are in the ISR (restarted clears)
    leader = cluster.leader()
    cluster.crash(leader)
    assert cluster.run_until(lambda: len(cluster.leaders()) == 1, 3000)
    index, _ = cluster.propose(b"after the failover")
    live = [i for i in cluster.shells if i not in cluster.crashed]
    assert cluster.run_until(lambda: cluster.committed_everywhere(index, live), 3000)


def test_a_follower_whose_fsync_stalls_longer_than_stall_ms_counts_itself_restarted() -> None:
    """Ticks go on while the write runs; the leader drops the silent follower from
    the ISR. Without the slow write counting as a stall the follower kept
    restarted = false and could later win alone on its stale view."""
    cluster = CoreCluster(3)
    leader = cluster.elect()
    cluster.run(200)
    follower = 3 if leader != 3 else 2
    node = cluster.node(follower)
    assert not node.restarted
    cluster.propose(b"x")
    queued, cluster.inbox[follower] = cluster.inbox[follower], []
    for msg, _ in queued:
        node.receive(msg, cluster.now)
    ready = node.ready()
    assert ready.entries
    for _ in range(30):  # 300 ms of ticks while the fsync runs
        cluster.now += 10
        node.tick(cluster.now)
    cluster.shells[follower].handle(ready, cluster.now)
    assert node.restarted


def test_a_leader_whose_fsync_stalls_holds_no_lease_and_steps_down() -> None:
    """The leader's heartbeats are stamped but held behind its stuck write, so its
    followers look silent. The write is a stall as soon as it is ``stall_ms`` late,
    not only once it returns: the leader steps down while it runs, before any
    heartbeat is overdue, so it neither drops its live followers nor holds a lease
    or commits anything more."""
    cluster = CoreCluster(3)
    leader = cluster.elect()
    cluster.run(200)
    node = cluster.node(leader)
    assert node.has_lease(cluster.now)
    cluster.propose(b"x")  # drained: durable on the leader
    index, _ = node.propose(b"stuck", cluster.now)
    ready = node.ready()
    assert ready.entries
    for _ in range(40):  # 400 ms: two leases of ticks, the write still running
        cluster.now += 10
        node.tick(cluster.now)
    assert node.role is not Role.LEADER and node.restarted
    assert node.view.config.isr == {1, 2, 3}  # nobody dropped for our own silence
    assert not node.has_lease(cluster.now)
    commit = node.commit
    cluster.shells[leader].handle(ready, cluster.now)
    assert node.role is not Role.LEADER
    assert node.commit == commit < index


def test_a_leader_stuck_in_a_write_never_wins_alone_on_its_in_memory_isr() -> None:
    """Simulator failstop --fsync-ms 20 seed 16 (and the "two leaders in term N" of
    seeds 121, 247, 211, 214, 294): the leader's fsync stalls for several leases
    while ticks go on. It used to drop both followers for the silence its own disk
    caused (ISR {itself}, in memory), then adopt the term of the vote request of
    the node that replaced it, campaign, and win alone on that ISR while its
    messages were still stuck: two leaders, each acknowledging writes."""
    cluster = CoreCluster(3)
    leader = cluster.elect()
    cluster.run(200)
    node = cluster.node(leader)
    other = 3 if leader != 3 else 2
    node.propose(b"stuck", cluster.now)
    ready = node.ready()
    assert ready.entries
    for _ in range(30):  # 300 ms of ticks, the write still running
        cluster.now += 10
        node.tick(cluster.now)
    rival = request_like(node, other, pre_vote=False, campaign=7)
    node.receive(rival, cluster.now)
    for _ in range(100):  # three more leases, the write still running
        cluster.now += 10
        node.tick(cluster.now)
        assert node.role is not Role.LEADER
        assert node.view.config.isr == {1, 2, 3}


def test_force_leader_is_refused_while_a_voter_reports_a_live_leader() -> None:
    """Node 2 restarts cut off from the leader; node 3 still follows it and answers
    node 2's pre-votes "live leader". Node 2's own lease ran out, so the old check
    let an operator force it to lead while node 1 led and served."""
    cluster = SlowCluster(3, delay_ms=5)
    assert cluster.elect() == 1
    cluster.run(100)
    cluster.cut |= {(1, 2), (2, 1)}
    cluster.crash(2)
    cluster.run(50)
    cluster.restart(2)
    cluster.run(2 * LEASE)  # its fresh-process lease is over; pre-votes were refused
    with pytest.raises(LocalProtocolError, match="seen leading"):
        cluster.node(2).force_leader(cluster.now)
    cluster.crash(1)  # now nobody leads: once a lease passes, forcing is allowed
    cluster.cut.clear()
    cluster.crash(3)
    cluster.run(2 * LEASE)
    cluster.node(2).force_leader(cluster.now)
    assert cluster.node(2).role is Role.LEADER


def test_a_forced_leaders_first_appends_wait_for_its_new_term_on_disk() -> None:
    """force_leader raises the term and leads at once: the Ready that carries its
    first Appends carries the new hard state too, so the production order (a
    leader's Appends before its own fsync) must hold them until after the fsync."""
    cluster = CoreCluster(3)
    cluster.elect()
    cluster.run(100)
    for node_id in cluster.shells:
        cluster.crash(node_id)
    cluster.restart(2)  # restarted, alone: it cannot prove its epoch latest
    cluster.run(2 * LEASE)
    node = cluster.node(2)
    assert node.role is not Role.LEADER
    node.force_leader(cluster.now)
    ready = node.ready()
    appends = [m for _, m in ready.messages if isinstance(m, Append)]
    assert appends and ready.hard_state is not None
    assert {m.term for m in appends} == {ready.hard_state.term}
    early, later = split_messages(ready, node.role is Role.LEADER)
    assert early == [] and len(later) == len(ready.messages)


def test_no_append_of_a_term_leaves_in_a_ready_before_that_terms_hard_state() -> None:
    """The core's half of "durable before it counts": across elections and
    failovers, the first Ready carrying an Append of term T is the one carrying
    the hard state of term T, or a later one."""
    cluster = SlowCluster(3, delay_ms=20)
    durable_term: dict[int, int] = {}
    bad: list[tuple[int, int, int]] = []
    for node_id, shell in cluster.shells.items():
        plain = shell.handle

        def handle(ready: Ready, now_ms: int, node_id: int = node_id, plain=plain):  # type: ignore[no-untyped-def]
            if ready.hard_state is not None:
                durable_term[node_id] = ready.hard_state.term
            for _, msg in ready.messages:
                if isinstance(msg, Append) and msg.term > durable_term.get(node_id, 0):
                    bad.append((node_id, msg.term, durable_term.get(node_id, 0)))
            return plain(ready, now_ms)

        shell.handle = handle  # type: ignore[method-assign]
        durable_term[node_id] = shell.storage.hard_state().term
    cluster.elect()
    cluster.run(500)
    cluster.crash(cluster.leader())
    assert cluster.run_until(lambda: len(cluster.leaders()) == 1, 3000)
    cluster.run(500)
    survivor = cluster.leader()
    for node_id in cluster.shells:
        cluster.crash(node_id)
    cluster.restart(survivor)
    cluster.run(2 * LEASE)
    cluster.node(survivor).force_leader(cluster.now)
    cluster.flush(survivor)
    assert cluster.leader() == survivor
    assert not bad


def test_overlapping_pre_votes_do_not_livelock_five_restarted_nodes_on_slow_links() -> None:
    """Simulator failstop --nodes 5 --max-delay-ms 100 seed 61: five nodes, all
    restarted (every grant needed), links of half a lease. Pre-votes never excluded
    each other, so two or three candidates won them at once and split every real
    vote (each voting for itself): no leader for 4 s. Now a candidate in a real
    vote refuses pre-votes, of two pre-vote candidates the lower id goes on, and a
    node that granted a pre-vote waits a lease before its own campaign."""
    cluster = SlowCluster(5, delay_ms=100)
    assert cluster.run_until(lambda: len(cluster.leaders()) == 1, 3000)


def test_a_pre_vote_candidate_yields_to_a_lower_id_and_refuses_a_higher_one() -> None:
    cluster = CoreCluster(3)
    cluster.run(LEASE + 100)  # leases from the start run out; pre-votes begin
    for node_id in (1, 2, 3):
        node = cluster.node(node_id)
        if node.role is not Role.CANDIDATE:
            node.campaign(cluster.now)
        node.ready()  # the requests are out (dropped here)

    def pre_vote(sender: int) -> VoteRequest:
        return request_like(cluster.node(sender), sender, pre_vote=True, campaign=1)

    node2 = cluster.node(2)
    node2.receive(pre_vote(3), cluster.now)
    (_, reply), *_ = node2.ready().messages
    assert not reply.granted and node2.role is Role.CANDIDATE  # 2 goes first
    node2.receive(pre_vote(1), cluster.now)
    (_, reply), *_ = node2.ready().messages
    assert reply.granted and node2.role is Role.FOLLOWER  # 1 goes first


def test_a_voter_yields_once_to_a_candidate_whose_pre_votes_keep_failing() -> None:
    """Simulator failstop --nodes 5 --membership -d50 --fsync-ms 20 seed 132: node 4,
    not in the latest ISR* but in the older views of nodes 1 and 2, pre-voted every
    80 ms and lost each time; 1 and 2, who could win, granted and waited a lease on
    every one and never ran. A voter yields once, until that candidate's real vote."""
    cluster = CoreCluster(3)
    node = cluster.node(1)
    now = LEASE + 1
    node.tick(now)  # the start-up lease ran out
    assert node.role is Role.FOLLOWER

    def pre_vote() -> VoteRequest:
        return request_like(node, 2, pre_vote=True, campaign=now)

    node.receive(pre_vote(), now)
    (_, reply), *_ = node.ready().messages
    assert reply.granted and node.inspect().election_at_ms == now + LEASE  # yields to node 2
    now += 80
    node.receive(pre_vote(), now)  # node 2 lost that one and tries again
    (_, reply), *_ = node.ready().messages
    assert reply.granted and node.inspect().election_at_ms == now - 80 + LEASE  # no second yield
