"""Validate before mutate: a refused peer message leaves the node exactly as it was.

One test per way a message can be wrong, InstallSnapshot's included.
Each builds a steady cluster, forges one message, and checks that the node
raises :class:`RemoteProtocolError` and that its whole observable state is
unchanged.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from coord.boundary import Entry, EntryKind
from coord.core.config import ClusterConfig, config_entry
from coord.core.errors import RemoteProtocolError
from coord.core.messages import (
    MAX_INT64,
    Append,
    AppendReply,
    InstallSnapshot,
    Message,
    TimeoutNow,
    VoteReply,
    VoteRequest,
)
from coord.testing.harness import TEST_SETTINGS, CoreCluster
from tests.support.core_state import observe


def refused(cluster: CoreCluster, node_id: int, msg: Message) -> None:
    """Deliver ``msg``; it must be refused and change nothing."""
    node = cluster.node(node_id)
    before = observe(node)
    with pytest.raises(RemoteProtocolError):
        node.receive(msg, cluster.now)
    assert observe(node) == before


def steady() -> tuple[CoreCluster, int]:
    cluster = CoreCluster(3)
    leader = cluster.elect()
    for n in range(3):
        cluster.propose(b"op%d" % n)
    cluster.run(100)
    return cluster, leader


def heartbeat(cluster: CoreCluster, leader: int, follower: int) -> Append:
    """The next heartbeat the leader would send this follower (taken off the wire)."""
    cluster.run(TEST_SETTINGS.heartbeat_ms)
    for sender, to, msg in reversed(cluster.sent):
        if sender == leader and to == follower and isinstance(msg, Append):
            return msg
    raise AssertionError("no heartbeat found")


def reply_to_leader(cluster: CoreCluster, leader: int, follower: int) -> AppendReply:
    for sender, to, msg in reversed(cluster.sent):
        if sender == follower and to == leader and isinstance(msg, AppendReply):
            return msg
    raise AssertionError("no reply found")


# -- bounds ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    ["term", "prev_index", "prev_term", "commit", "epoch", "fence", "sent_at_ms"],
)
def test_an_append_with_a_field_beyond_int64_is_refused(field: str) -> None:
    cluster, leader = steady()
    msg = heartbeat(cluster, leader, 2)
    refused(cluster, 2, replace(msg, **{field: MAX_INT64 + 1}))


@pytest.mark.parametrize("field", ["prev_index", "prev_term", "commit", "epoch", "term"])
def test_an_append_with_a_negative_field_is_refused(field: str) -> None:
    cluster, leader = steady()
    refused(cluster, 2, replace(heartbeat(cluster, leader, 2), **{field: -1}))


def test_a_vote_request_with_a_term_beyond_int64_is_refused() -> None:
    cluster, _ = steady()
    request = VoteRequest(2**63, 3, False, 1, 2**63, 2**63, 1, 0, 0)
    refused(cluster, 2, request)


@pytest.mark.parametrize(
    "field", ["term", "campaign", "last_log_term", "last_log_index", "epoch", "epoch_term"]
)
def test_a_vote_reply_with_a_field_beyond_int64_is_refused(field: str) -> None:
    cluster, leader = steady()
    reply = VoteReply(1, 2, False, 1, True, 1, 1, 1, 0, (1, 2), False, False, 0)
    refused(cluster, leader, replace(reply, **{field: MAX_INT64 + 1}))


def test_a_sender_id_beyond_int64_or_zero_is_refused() -> None:
    cluster, leader = steady()
    msg = heartbeat(cluster, leader, 2)
    refused(cluster, 2, replace(msg, sender=2**64))
    refused(cluster, 2, replace(msg, sender=0))


def test_a_message_from_the_node_itself_is_refused() -> None:
    cluster, leader = steady()
    refused(cluster, 2, replace(heartbeat(cluster, leader, 2), sender=2))


# -- the leader's side: acks -----------------------------------------------------


def test_an_ack_beyond_what_the_leader_sent_that_follower_is_refused() -> None:
    cluster, leader = steady()
    cluster.run(50)
    reply = reply_to_leader(cluster, leader, 2)
    refused(cluster, leader, replace(reply, match_index=2**62))
    last = cluster.node(leader).log.last_index()
    refused(cluster, leader, replace(reply, match_index=last + 1))


def test_an_ack_of_an_index_written_but_not_yet_sent_is_refused() -> None:
    cluster, leader = steady()
    cluster.run(50)
    reply = reply_to_leader(cluster, leader, 2)
    index, _ = cluster.node(leader).propose(b"not sent yet", cluster.now)
    refused(cluster, leader, replace(reply, match_index=index))


def test_an_echo_of_a_send_time_in_the_future_is_refused() -> None:
    cluster, leader = steady()
    reply = reply_to_leader(cluster, leader, 2)
    refused(cluster, leader, replace(reply, echo_sent_at_ms=cluster.now + 10**6))


def test_a_reject_beyond_what_was_sent_is_refused() -> None:
    cluster, leader = steady()
    reply = reply_to_leader(cluster, leader, 2)
    refused(cluster, leader, replace(reply, success=False, reject_index=2**40, hint_index=3))
    # A hint beyond the reject is harmless (the leader retries from min(reject, hint+1))
    # and honest: a reply to an Append of an older term carries the follower's last index.


# -- the follower's side: entries --------------------------------------------------


def test_an_append_whose_entries_below_commit_differ_from_the_log_is_refused() -> None:
    """The forged login: entries from index 1, the committed ones with other terms."""
    cluster, leader = steady()
    msg = heartbeat(cluster, leader, 2)
    commit = cluster.node(2).commit
    forged = tuple(
        Entry(i, msg.term, EntryKind.OP, b"login as admin") for i in range(1, commit + 2)
    )
    refused(
        cluster,
        2,
        replace(msg, prev_index=0, prev_term=0, entries=forged, commit=commit + 1),
    )


def test_an_append_whose_prev_below_commit_differs_from_the_log_is_refused() -> None:
    cluster, leader = steady()
    msg = heartbeat(cluster, leader, 2)
    commit = cluster.node(2).commit
    tail = (Entry(commit + 1, msg.term, EntryKind.OP, b"x"),)
    refused(cluster, 2, replace(msg, prev_index=commit - 1, prev_term=msg.term + 5, entries=tail))


def test_an_append_with_a_changed_payload_at_a_committed_index_is_refused() -> None:
    cluster, leader = steady()
    msg = heartbeat(cluster, leader, 2)
    node = cluster.node(2)
    held = node.log.entries(node.commit, node.commit + 1, 1 << 20)
    assert held
    changed = (replace(held[0], payload=b"something else"),)
    refused(cluster, 2, replace(msg, prev_index=node.commit - 1, prev_term=0, entries=changed))


def test_entries_that_are_not_contiguous_are_refused() -> None:
    cluster, leader = steady()
    msg = heartbeat(cluster, leader, 2)
    last = cluster.node(2).log.last_index()
    prev_term = cluster.node(2).log.last_term()
    gap = (
        Entry(last + 1, msg.term, EntryKind.OP, b"a"),
        Entry(last + 3, msg.term, EntryKind.OP, b"b"),
    )
    refused(cluster, 2, replace(msg, prev_index=last, prev_term=prev_term, entries=gap))
    late = (Entry(last + 2, msg.term, EntryKind.OP, b"a"),)
    refused(cluster, 2, replace(msg, prev_index=last, prev_term=prev_term, entries=late))


def test_entry_terms_must_not_decrease_nor_exceed_the_message_term() -> None:
    cluster, leader = steady()
    msg = heartbeat(cluster, leader, 2)
    last = cluster.node(2).log.last_index()
    prev_term = cluster.node(2).log.last_term()
    ahead = (Entry(last + 1, msg.term + 1, EntryKind.OP, b"a"),)
    refused(cluster, 2, replace(msg, prev_index=last, prev_term=prev_term, entries=ahead))
    down = (
        Entry(last + 1, msg.term, EntryKind.OP, b"a"),
        Entry(last + 2, msg.term - 1, EntryKind.OP, b"b"),
    )
    refused(cluster, 2, replace(msg, prev_index=last, prev_term=prev_term, entries=down))
    below_prev = (Entry(last + 1, prev_term - 1, EntryKind.OP, b"a"),)
    refused(cluster, 2, replace(msg, prev_index=last, prev_term=prev_term, entries=below_prev))


def test_an_entry_of_an_unknown_kind_is_refused() -> None:
    cluster, leader = steady()
    msg = heartbeat(cluster, leader, 2)
    last = cluster.node(2).log.last_index()
    odd = (Entry(last + 1, msg.term, 7, b"a"),)  # type: ignore[arg-type]
    refused(
        cluster,
        2,
        replace(msg, prev_index=last, prev_term=cluster.node(2).log.last_term(), entries=odd),
    )


def config_append(cluster: CoreCluster, leader: int, payload: bytes) -> Append:
    msg = heartbeat(cluster, leader, 2)
    node = cluster.node(2)
    last = node.log.last_index()
    entry = Entry(last + 1, msg.term, EntryKind.CONFIG, payload)
    return replace(msg, prev_index=last, prev_term=node.log.last_term(), entries=(entry,))


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        b'{"members": {"1": "a"}, "isr": [2], "min_insync": 1}',
        b'{"members": {"1": "a", "2": "b", "3": "c"}, "isr": [1], "min_insync": 4}',
        b'{"members": {"-1": "a"}, "isr": [], "min_insync": 1}',
        b'{"members": {"99999999999999999999": "a"}, "isr": [], "min_insync": 1}',
    ],
)
def test_a_malformed_config_entry_is_refused_before_anything_is_appended(payload: bytes) -> None:
    cluster, leader = steady()
    refused(cluster, 2, config_append(cluster, leader, payload))


def test_a_config_entry_that_changes_min_insync_is_refused() -> None:
    cluster, leader = steady()
    config = ClusterConfig.create({1: "node1:7000", 2: "node2:7000", 3: "node3:7000"}, min_insync=2)
    refused(cluster, 2, config_append(cluster, leader, config.encode()))


def test_a_config_entry_that_changes_two_members_at_once_is_refused() -> None:
    cluster, leader = steady()
    config = ClusterConfig.create({1: "node1:7000", 2: "node2:7000", 4: "x", 5: "y"})
    refused(cluster, 2, config_append(cluster, leader, config.encode()))


def test_an_isr_naming_a_non_member_is_refused() -> None:
    cluster, leader = steady()
    msg = heartbeat(cluster, leader, 2)
    refused(cluster, 2, replace(msg, isr=(1, 2, 9)))
    refused(cluster, 2, replace(msg, isr=(1, 1, 2)))


def test_an_append_in_our_term_from_another_leader_is_refused() -> None:
    cluster, leader = steady()
    other = next(i for i in (1, 2, 3) if i not in (leader, 2))
    refused(cluster, 2, replace(heartbeat(cluster, leader, 2), sender=other))


def test_an_append_in_our_term_to_the_leader_is_refused() -> None:
    cluster, leader = steady()
    msg = heartbeat(cluster, leader, 2)
    refused(cluster, leader, replace(msg, sender=2))


# -- votes -----------------------------------------------------------------------------


def test_a_vote_reply_from_a_non_member_does_not_change_the_term() -> None:
    cluster, leader = steady()
    reply = VoteReply(99, 7, False, 1, False, 1, 1, 1, 0, (1, 2), False, False, 0)
    refused(cluster, leader, reply)


def test_a_granted_vote_for_another_term_is_refused() -> None:
    cluster = CoreCluster(3)
    cluster.run(TEST_SETTINGS.lease_ms)
    node = cluster.node(1)
    ballot = node.inspect().ballot
    if ballot is None or ballot.pre_vote:
        node.campaign(cluster.now, pre_vote=False)
    ballot = node.inspect().ballot
    assert ballot is not None and not ballot.pre_vote
    grant = VoteReply(
        ballot.term + 3, 2, False, ballot.campaign, True, 1, 1, 1, 0, (1, 2, 3), False, False, 0
    )
    refused(cluster, 1, grant)


def test_timeout_now_from_a_non_member_is_refused() -> None:
    cluster, _ = steady()
    refused(cluster, 2, TimeoutNow(cluster.node(2).term, 77))


# -- the follower's side: snapshots ----------------------------------------------


def snapshot_from(cluster: CoreCluster, leader: int, **changes: Any) -> InstallSnapshot:
    node = cluster.node(leader)
    config = node.log.last_config(node.commit)
    assert config is not None
    msg = InstallSnapshot(node.term, leader, node.commit, node.log.term(node.commit), config)
    return replace(msg, **changes)


def test_install_snapshot_is_refused_on_a_leader() -> None:
    cluster, leader = steady()
    refused(cluster, leader, snapshot_from(cluster, leader, sender=2))
    refused(
        cluster,
        leader,
        snapshot_from(cluster, leader, sender=2, term=cluster.node(leader).term + 1),
    )


def test_install_snapshot_is_refused_from_anyone_but_the_leader_we_follow() -> None:
    cluster, leader = steady()
    other = next(i for i in (1, 2, 3) if i not in (leader, 2))
    refused(cluster, 2, snapshot_from(cluster, leader, sender=other))
    refused(cluster, 2, snapshot_from(cluster, leader, term=cluster.node(2).term + 1))


@pytest.mark.parametrize(
    "changes",
    [
        {"index": MAX_INT64 + 1},
        {"index": -1},
        {"index_term": MAX_INT64 + 1},
        {"index_term": 99},
        {"config": Entry(1, 0, EntryKind.CONFIG, b"garbage")},
        {"config": Entry(1, 0, EntryKind.OP, b"")},
        {"config": config_entry(99, 0, ClusterConfig.create({1: "a"}))},
    ],
)
def test_install_snapshot_with_bad_fields_is_refused(changes: dict[str, Any]) -> None:
    cluster, leader = steady()
    refused(cluster, 2, snapshot_from(cluster, leader, **changes))


def test_a_refused_message_does_not_stop_the_cluster() -> None:
    cluster, leader = steady()
    with pytest.raises(RemoteProtocolError):
        cluster.node(2).receive(replace(heartbeat(cluster, leader, 2), term=2**63), cluster.now)
    index, _ = cluster.propose(b"after")
    assert cluster.run_until(lambda: cluster.committed_everywhere(index))
