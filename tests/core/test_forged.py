"""Arbitrary and forged peer messages, interleaved with a running cluster (hypothesis).

Two properties:

* Any message at all (random fields, huge and negative ints, random senders,
  random entries and config payloads) is either refused with
  :class:`RemoteProtocolError` and no state change, or taken. Whatever is
  taken, a node never changes what it committed, never holds a term beyond
  int64, and can always restart from what it wrote. Cluster-wide safety is not
  asked of this one: a message that impersonates the current leader exactly is
  indistinguishable from it, and shutting impersonators out is the shell's
  identity binding.
* Forgeries invalid by construction (out-of-range fields, a node's own id as
  sender) are always refused unchanged; real messages turned into ones the
  receiver's state shows wrong (history below its commit rewritten, acks
  beyond what was sent, undecodable configs, gaps) are refused unchanged or
  harmless; replays of real messages (late duplicates) may be taken. With
  crashes and restarts in between, the cluster's invariants hold throughout:
  one leader per term, committed entries never change, and logs agree at
  every committed index.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coord.boundary import Entry, EntryKind
from coord.core.config import ClusterConfig
from coord.core.errors import Redirect, RemoteProtocolError
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
from coord.core.node import Node
from coord.testing.harness import TEST_SETTINGS, CoreCluster
from tests.support.core_state import observe

INTS = st.one_of(
    st.integers(-2, 12),
    st.integers(MAX_INT64 - 2, MAX_INT64 + 2),
    st.integers(-(2**64), 2**64),
)
SENDERS = st.one_of(st.integers(1, 4), st.sampled_from([0, -1, 99, 2**63, 2**64]))
CONFIG_PAYLOADS = st.one_of(
    st.binary(max_size=16),
    st.just(ClusterConfig.create({1: "node1:7000", 2: "node2:7000", 3: "node3:7000"}).encode()),
    st.just(ClusterConfig.create({1: "node1:7000", 2: "node2:7000"}, min_insync=2).encode()),
    st.just(b'{"members": {"1": "a"}, "isr": [7], "min_insync": 1}'),
)
KINDS = st.one_of(st.sampled_from(list(EntryKind)), st.integers(0, 9))


@st.composite
def entries(draw: st.DrawFn) -> tuple[Entry, ...]:
    start = draw(st.integers(-1, 12))
    count = draw(st.integers(0, 3))
    out = []
    for offset in range(count):
        kind = draw(KINDS)
        payload = draw(CONFIG_PAYLOADS) if kind == EntryKind.CONFIG else draw(st.binary(max_size=4))
        index = start + offset if draw(st.booleans()) else draw(INTS)
        out.append(
            Entry(
                index, draw(st.integers(0, 5)) if draw(st.booleans()) else draw(INTS), kind, payload
            )
        )
    return tuple(out)


def message_of(cls: type[Message]) -> st.SearchStrategy[Message]:
    """A message of ``cls`` with every field drawn at random."""
    values: dict[str, st.SearchStrategy[Any]] = {}
    for field in fields(cls):
        if field.name == "sender":
            values[field.name] = SENDERS
        elif field.name in ("term", "prev_term", "index_term"):
            values[field.name] = st.one_of(st.integers(0, 5), INTS)
        elif field.name == "entries":
            values[field.name] = entries()
        elif field.name == "isr":
            values[field.name] = st.lists(SENDERS, max_size=4).map(tuple)
        elif field.name == "config":
            values[field.name] = st.builds(
                Entry, st.integers(-1, 12), st.integers(0, 5), KINDS, CONFIG_PAYLOADS
            )
        elif field.type in ("bool", bool):
            values[field.name] = st.booleans()
        else:
            values[field.name] = INTS
    return st.builds(cls, **values)


ANY_MESSAGE = st.one_of(
    *(
        message_of(cls)
        for cls in (Append, AppendReply, VoteRequest, VoteReply, TimeoutNow, InstallSnapshot)
    )
)
ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("step"), st.integers(1, 60)),
        st.tuples(st.just("propose"), st.binary(max_size=4)),
        st.tuples(st.just("forge"), st.integers(1, 3), ANY_MESSAGE),
        st.tuples(st.just("tweak"), st.integers(0, 10**6), st.data()),
    ),
    max_size=40,
)


def tweak(msg: Message, data: st.DataObject) -> Message:
    """A real message with one to three fields drawn at random: forgeries that look real."""
    names = [f.name for f in fields(msg)]
    chosen = data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
    strategy = message_of(type(msg))
    drawn = data.draw(strategy)
    return replace(msg, **{name: getattr(drawn, name) for name in chosen})


def committed_prefix(cluster: CoreCluster, node_id: int) -> tuple[Entry, ...]:
    shell = cluster.shells[node_id]
    node = shell.node
    high = min(node.commit, node.log.stable_last)
    first = shell.storage.first_index()
    return tuple(shell.storage.entries(first, high + 1, 1 << 30)) if high >= first else ()


def feed(cluster: CoreCluster, node_id: int, msg: Message) -> bool:
    """Deliver one message; True if taken. A refused one must change nothing."""
    node = cluster.node(node_id)
    before = observe(node)
    try:
        node.receive(msg, cluster.now)
    except RemoteProtocolError:
        assert observe(node) == before, f"refused {msg} but changed the node"
        return False
    cluster.flush(node_id)
    return True


def propose(cluster: CoreCluster, payload: bytes) -> None:
    for leader in cluster.leaders():
        try:
            cluster.node(leader).propose(payload, cluster.now)
        except Redirect:
            continue
        cluster.flush(leader)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ACTIONS)
def test_arbitrary_messages_are_refused_unchanged_or_taken(actions: list[Any]) -> None:
    cluster = CoreCluster(3)
    cluster.elect()
    propose(cluster, b"first")
    cluster.run(60)
    for action in actions:
        prefixes = {i: committed_prefix(cluster, i) for i in cluster.shells}
        if action[0] == "step":
            cluster.run(action[1])
        elif action[0] == "propose":
            propose(cluster, action[1])
        elif action[0] == "forge":
            feed(cluster, action[1], action[2])
        elif cluster.sent:
            _, to, msg = cluster.sent[action[1] % len(cluster.sent)]
            if to not in cluster.crashed:
                feed(cluster, to, tweak(msg, action[2]))
        for i, prefix in prefixes.items():
            now = committed_prefix(cluster, i)
            assert now[: len(prefix)] == prefix, f"node {i} changed what it committed"
            assert cluster.node(i).term <= MAX_INT64
    for i, shell in cluster.shells.items():
        shell.restart(cluster.now)  # every config it wrote decodes, its state loads
        assert cluster.node(i).term <= MAX_INT64


# -- forged-invalid and replayed messages, with crashes: cluster-wide safety ---------


def invalid(msg: Message, target: int, how: int) -> Message:
    """A mutation no correct peer ever sends, whatever the receiver's state."""
    if how == 0:
        return replace(msg, term=MAX_INT64 + 1 + how)
    if how == 1:
        return replace(msg, sender=target)
    if how == 2:
        return replace(msg, sender=0)
    name = next(f.name for f in fields(msg) if f.name not in ("term", "sender", "pre_vote"))
    value = getattr(msg, name)
    if isinstance(value, bool) or not isinstance(value, int):
        return replace(msg, term=-1)
    return replace(msg, **{name: -(2**63) - 1 if name.endswith("_ms") else -1})


def semantic(cluster: CoreCluster, to: int, msg: Message, how: int) -> Message | None:
    """A real message turned into one the validator must catch in the receiver's state:
    rewritten history below its commit, an ack beyond what was sent, a config that does
    not decode, entries with a gap. Taken only if the state makes it harmless."""
    node = cluster.node(to)
    if isinstance(msg, Append) and how == 0 and node.commit >= 2:
        forged = tuple(
            Entry(i, msg.term, EntryKind.OP, b"forged") for i in range(1, node.commit + 3)
        )
        return replace(msg, prev_index=0, prev_term=0, entries=forged, commit=node.commit + 2)
    if isinstance(msg, Append) and how == 3:
        return rewritten_history(node, msg)
    if isinstance(msg, Append) and how == 1:
        last = msg.prev_index + len(msg.entries)
        junk = Entry(last + 1, msg.term, EntryKind.CONFIG, b"{not json")
        return replace(msg, entries=(*msg.entries, junk))
    if isinstance(msg, Append) and how == 2 and msg.entries:
        shifted = tuple(replace(e, index=e.index + 1) for e in msg.entries)
        return replace(msg, entries=shifted)
    if isinstance(msg, AppendReply) and how in (0, 1):
        return replace(msg, success=True, match_index=node.log.last_index() + 1 + how)
    if isinstance(msg, AppendReply) and how == 2:
        return replace(msg, echo_sent_at_ms=cluster.now + 10**6)
    return None


def rewritten_history(node: Node, msg: Append) -> Append | None:
    """Our own log up to commit with one op or noop changed, configs kept, then new
    entries: only the check of what lies below the commit index can tell."""
    held = node.log.entries(node.log.first_available(), node.commit + 1, 1 << 30) or []
    victim = next((e for e in held if e.kind is not EntryKind.CONFIG), None)
    if victim is None:
        return None
    changed = [replace(e, payload=b"forged") if e is victim else e for e in held]
    tail = [Entry(node.commit + 1, node.log.term(node.commit + 1) or msg.term, EntryKind.OP, b"x")]
    prev = changed[0].index - 1
    prev_term = node.log.term(prev)
    if prev_term is None or tail[0].term > msg.term:
        return None
    return replace(
        msg, prev_index=prev, prev_term=prev_term, entries=(*changed, *tail), commit=node.commit + 1
    )


class Watch:
    """The cluster-wide invariants, checked after every action."""

    def __init__(self, cluster: CoreCluster) -> None:
        self.cluster = cluster
        self.leader_of_term: dict[int, int] = {}
        self.applied: dict[int, Entry] = {}
        for shell in cluster.shells.values():
            shell.on_apply = lambda shell, entry: self.apply(entry)

    def apply(self, entry: Entry) -> None:
        first = self.applied.setdefault(entry.index, entry)
        assert first == entry, f"index {entry.index} applied as {first} and as {entry}"

    def check(self) -> None:
        cluster = self.cluster
        for i in cluster.leaders():
            term = cluster.node(i).term
            assert self.leader_of_term.setdefault(term, i) == i, f"two leaders in term {term}"
        for i in cluster.shells:
            if i in cluster.crashed:
                continue
            for entry in committed_prefix(cluster, i):
                if entry.index in self.applied:
                    assert self.applied[entry.index] == entry, f"node {i} differs at {entry.index}"


REPLAY_ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("step"), st.integers(1, 60)),
        st.tuples(st.just("propose"), st.binary(max_size=4)),
        st.tuples(st.just("replay"), st.integers(0, 10**6)),
        st.tuples(st.just("forge"), st.integers(0, 10**6), st.integers(0, 4)),
        st.tuples(st.just("semantic"), st.integers(0, 10**6), st.integers(0, 3)),
        st.tuples(st.just("crash"), st.integers(1, 3)),
        st.tuples(st.just("restart"), st.integers(1, 3)),
    ),
    max_size=50,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(REPLAY_ACTIONS, st.integers(0, 2**32))
def test_forged_and_replayed_messages_keep_the_cluster_safe(actions: list[Any], seed: int) -> None:
    cluster = CoreCluster(3, seed=seed % 7)
    watch = Watch(cluster)
    cluster.elect()
    for action in actions:
        kind = action[0]
        real = [
            (to, msg)
            for _, to, msg in cluster.sent
            if not isinstance(msg, InstallSnapshot) and to not in cluster.crashed
        ]
        if kind == "step":
            cluster.run(action[1])
        elif kind == "propose":
            propose(cluster, action[1])
        elif kind == "replay" and real:
            to, msg = real[action[1] % len(real)]
            feed(cluster, to, msg)
        elif kind == "forge" and real:
            to, msg = real[action[1] % len(real)]
            forged = invalid(msg, to, action[2])
            assert not feed(cluster, to, forged), f"took {forged}"
        elif kind == "semantic" and real:
            to, msg = real[action[1] % len(real)]
            forged = semantic(cluster, to, msg, action[2])
            if forged is not None:
                feed(cluster, to, forged)
        elif kind == "crash" and len(cluster.crashed) < 2:
            cluster.crash(action[1])
        elif kind == "restart" and action[1] in cluster.crashed:
            cluster.restart(action[1])
        watch.check()
        assert not any(cluster.node(i).removed for i in cluster.shells)
    for i in sorted(cluster.crashed):
        cluster.restart(i)
    leader = cluster.elect(20 * TEST_SETTINGS.lease_ms)
    index, _ = cluster.node(leader).propose(b"the end", cluster.now)
    cluster.flush(leader)
    assert cluster.run_until(
        lambda: cluster.committed_everywhere(index), 20 * TEST_SETTINGS.lease_ms
    )
    watch.check()
