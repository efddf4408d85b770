"""Helpers for the real-process fault tests: leader-following calls, load, streams, checks.

They speak raw gRPC rather than going through ``client.library`` on purpose:
the tests check the *server's* contract (one stored message per request id,
no gap and no duplicate on a resumed ``Subscribe``), so nothing between the
test and the nodes may retry differently or filter out a duplicate the way a
client library is free to.

Every wait is bounded (``WAIT_S`` unless told otherwise) and every poll has a
deadline; none of them sleeps in place of an event it could await.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from chatnode.local_cluster import Cluster, local_cluster
from proto import chat_pb2 as pb
from proto import chat_pb2_grpc
from tests.netns.workload import replica_inbox
from tests.support.nodes import PASSWORD

# The product defaults. A node whose own ticks stall past lease/2 steps down and
# may no longer vouch for the ISR; with 600 ms leases, CPU starvation on two busy
# cores did that to a last survivor (a test then waits forever for a leader, as
# coord/PROTOCOL.md §8.5 says). Failover after kill -9 is fast anyway (refused connections).
LEASE_MS = 1000
HEARTBEAT_MS = 100
NODE_ARGS = ("--lease-ms", str(LEASE_MS), "--heartbeat-ms", str(HEARTBEAT_MS))
LEASE_S = LEASE_MS / 1000
WAIT_S = 30.0  # any one wait; a failover takes about a lease, a restart a few seconds
POLL_S = 0.05
PROBE_S = 0.5  # one GetClusterStatus; a paused node never answers it
ATTEMPT_S = 3.0  # one try of one call; a try that hangs longer met a paused node
# CANCELLED is not in the contract; a node killed mid-call may still end a call with it
# (test_sigterm_refuses_calls_with_unavailable_never_cancelled checks a clean stop never
# does). Retrying it is safe: every mutating call here carries a request id.
RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)
# gRPC's reconnect back-off grows to minutes; a node restarted on its old port
# must be reachable again within a poll or two.
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
)

Metadata = tuple[tuple[str, str], ...]
_unique = itertools.count()


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


def fresh_request_id(prefix: str) -> str:
    return f"{prefix}-{next(_unique)}"


async def deadline_loop(within_s: float, what: str) -> AsyncIterator[None]:
    """Yield once per poll until the caller breaks out; TimeoutError naming `what` after timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        yield
        if loop.time() >= deadline:
            raise TimeoutError(f"{what}: not within {within_s:g}s")
        await asyncio.sleep(POLL_S)


# -- talking to the cluster ------------------------------------------------------------


class Members:
    """Raw stubs on every node of a cluster, and unary calls that follow the leader.

    Only ``UNAVAILABLE`` (not the leader, no leader, connection lost), a try's
    own deadline (a paused node) and ``CANCELLED`` (see ``RETRYABLE``) are
    retried, always with the same request object, so a mutating call keeps its
    ``request_id`` across every try.
    """

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._channels = {
            node_id: grpc.aio.insecure_channel(node.address, options=CHANNEL_OPTIONS)
            for node_id, node in cluster.nodes.items()
        }
        self._leader = 0  # the node believed to lead; 0 while unknown

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

    def stub(self, node_id: int) -> chat_pb2_grpc.ChatServiceStub:
        return chat_pb2_grpc.ChatServiceStub(self._channels[node_id])

    async def status(self, node_id: int) -> pb.ClusterStatus | None:
        """The node's own view, or None if it does not answer (dead or paused)."""
        try:
            return await self.stub(node_id).GetClusterStatus(
                pb.GetClusterStatusRequest(), timeout=PROBE_S
            )
        except grpc.aio.AioRpcError:
            return None

    async def statuses(self, among: Iterable[int] | None = None) -> dict[int, pb.ClusterStatus]:
        """The views of every answering node of `among` (default: all), asked at once."""
        ids = list(self._channels if among is None else among)
        answers = await asyncio.gather(*(self.status(i) for i in ids))
        return {i: s for i, s in zip(ids, answers, strict=True) if s is not None}

    async def find_leader(
        self, among: Iterable[int] | None = None, within_s: float = WAIT_S
    ) -> int:
        """Poll until some node of `among` says it leads; return its id.

        Among several claimants the highest term wins: a deposed leader may not
        know yet that it was deposed.
        """
        ids = list(self._channels if among is None else among)
        async for _ in deadline_loop(within_s, f"a leader among nodes {ids}"):
            leaders = [s for s in (await self.statuses(ids)).values() if s.role == "leader"]
            if leaders:
                self._leader = max(leaders, key=lambda s: s.term).node_id
                return self._leader
        raise AssertionError("unreachable")

    def forget(self, node_id: int) -> None:
        """Stop sending to node_id until a poll finds it leading again."""
        if self._leader == node_id:
            self._leader = 0

    async def call_counted(
        self, method: str, request: Any, auth: Metadata = (), within_s: float = WAIT_S
    ) -> tuple[Any, int]:
        """Call method on the leader until it answers for real; the reply and the tries taken."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        for attempt in itertools.count(1):
            leader = self._leader or await self.find_leader(within_s=deadline - loop.time())
            remaining = deadline - loop.time()
            try:
                rpc = getattr(self.stub(leader), method)
                reply = await rpc(request, metadata=auth, timeout=min(ATTEMPT_S, remaining))
                return reply, attempt
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRYABLE or loop.time() >= deadline:
                    raise
                self.forget(leader)
            await asyncio.sleep(POLL_S)
        raise AssertionError("unreachable")

    async def call(
        self, method: str, request: Any, auth: Metadata = (), within_s: float = WAIT_S
    ) -> Any:
        return (await self.call_counted(method, request, auth, within_s))[0]


async def sign_up(members: Members, name: str) -> Metadata:
    """Create an account and log in, both retry-safe (request ids); the session's metadata."""
    await members.call(
        "CreateAccount",
        pb.CreateAccountRequest(username=name, password=PASSWORD, request_id=f"create-{name}"),
    )
    return await log_in(members, name)


async def log_in(members: Members, name: str) -> Metadata:
    """A new session; Login is a replicated write, so it also proves a leader commits."""
    reply = await members.call(
        "Login",
        pb.LoginRequest(username=name, password=PASSWORD, request_id=fresh_request_id("login")),
    )
    return bearer(reply.session_token)


@contextlib.asynccontextmanager
async def running_cluster(
    tmp_path: Path, args: tuple[str, ...] = NODE_ARGS
) -> AsyncIterator[tuple[Cluster, Members]]:
    """Three real nodes and a Members over them; all killed afterwards.

    On failure the end of every node's log is attached to the exception, which
    is where the evidence for a product bug is.
    """
    with local_cluster(tmp_path, size=3, extra_args=args) as cluster:
        members = Members(cluster)
        try:
            yield cluster, members
        except BaseException as exc:
            exc.add_note(cluster.log_tails())
            raise
        finally:
            await members.close()


# -- waiting for the cluster -------------------------------------------------------------


async def wait_new_leader(members: Members, old: int, within_s: float = WAIT_S) -> int:
    """The first node other than `old` that leads."""
    among = [i for i in members.cluster.nodes if i != old]
    return await members.find_leader(among, within_s)


async def wait_in_sync(members: Members, node_id: int, within_s: float = WAIT_S) -> None:
    """Wait until the leader has node_id back in its ISR (it caught up to the commit index)."""
    async for _ in deadline_loop(within_s, f"node {node_id} back in the ISR"):
        leader = await members.find_leader(within_s=within_s)
        status = await members.status(leader)
        if status is not None and any(m.id == node_id and m.in_sync for m in status.members):
            return


async def wait_caught_up(members: Members, within_s: float = WAIT_S) -> pb.ClusterStatus:
    """With writes stopped: wait until every node is in sync, matched, and at one commit index
    its state has applied.

    The leader must list every member in its ISR with a match index at its
    commit index (its own match is its last index, so nothing is pending), and
    every node must report that leader and that commit index. Returns the
    leader's status.
    """
    everyone = set(members.cluster.nodes)
    async for _ in deadline_loop(within_s, "every node caught up"):
        leader = await members.find_leader(within_s=within_s)
        views = await members.statuses()
        top = views.get(leader)
        if top is None or views.keys() != everyone:
            continue
        matched = all(m.in_sync and m.match_index == top.commit_index for m in top.members)
        same = all(
            v.leader_id == leader and v.commit_index == v.applied_index == top.commit_index
            for v in views.values()
        )
        if matched and same and {m.id for m in top.members} == everyone:
            return top
    raise AssertionError("unreachable")


async def settle(members: Members, name: str) -> None:
    """Make every node a follower that may vouch for the ISR, as a crash test assumes.

    A node that (re)started stays ``restarted`` (coord/PROTOCOL.md §4) until an
    Append sent after the leader heard from this incarnation tells it that it
    is in the ISR; a group of only such nodes may not elect. Once all are in
    sync, a first committed write proves the leader heard every follower, and a
    second one carries the echo to them (it commits only after they acked it).
    """
    await wait_caught_up(members)
    for _ in range(2):
        await log_in(members, name)


def kill(members: Members, node_id: int) -> None:
    """kill -9, and stop routing calls to the corpse."""
    members.cluster.nodes[node_id].kill()
    members.forget(node_id)


# -- load -----------------------------------------------------------------------------------


def phase_of(body: str) -> str:
    return body.split("/", 1)[0]


@dataclass
class Load:
    """Concurrent senders to one recipient, each send retried with its request id until acked.

    A message's body is its request id, ``<phase>/w<writer>/<seq>``: the stored
    message names the send it came from, and the phase says when that send
    started. A writer sends its next message only after the previous one was
    acknowledged, so its acknowledged ids must increase.
    """

    members: Members
    auth: Metadata
    recipient: str
    writers: int = 3
    phase: str = "start"
    acked: dict[str, int] = field(default_factory=dict)  # request id -> message id
    retried: set[str] = field(default_factory=set)  # request ids that took several tries
    by_writer: dict[int, list[int]] = field(default_factory=dict)  # acked ids, in send order
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: bool = False

    def start(self) -> Load:
        self._tasks = [asyncio.create_task(self._write(w)) for w in range(self.writers)]
        return self

    async def _write(self, writer: int) -> None:
        ids = self.by_writer.setdefault(writer, [])
        try:
            for seq in itertools.count():
                if self._stopping:
                    return
                request_id = f"{self.phase}/w{writer}/{seq}"
                request = pb.SendMessageRequest(
                    recipient=self.recipient, body=request_id, request_id=request_id
                )
                reply, tries = await self.members.call_counted("SendMessage", request, self.auth)
                self.acked[request_id] = reply.message_id
                ids.append(reply.message_id)
                if tries > 1:
                    self.retried.add(request_id)
                self._changed.set()
        finally:
            self._changed.set()  # a writer that failed wakes the waiters, who then raise

    def count(self, phase: str) -> int:
        return sum(1 for request_id in self.acked if phase_of(request_id) == phase)

    async def run_phase(self, phase: str, acks: int, within_s: float = WAIT_S) -> None:
        """Start `phase` and wait until `acks` sends started in it are acknowledged."""
        self.phase = phase
        async with asyncio.timeout(within_s):
            while self.count(phase) < acks:
                self._raise_failures()
                self._changed.clear()
                await self._changed.wait()

    async def stop(self) -> None:
        """Start no more sends; wait for those in flight to be acknowledged."""
        self._stopping = True
        async with asyncio.timeout(WAIT_S + ATTEMPT_S):
            await asyncio.gather(*self._tasks)

    def _raise_failures(self) -> None:
        for task in self._tasks:
            if task.done():
                task.result()


# -- streams -------------------------------------------------------------------------------


class Subscriber:
    """A Subscribe stream on whichever node leads, reopened after the last id received.

    It keeps every message event exactly as it arrived: duplicates, gaps and
    disorder are for the test to find, not for the helper to filter.
    """

    def __init__(self, members: Members, auth: Metadata, after_id: int = 0) -> None:
        self.members = members
        self.auth = auth
        self.received: list[pb.Message] = []
        self.streams = 0  # how many streams were opened; resumes = streams - 1
        self._arrived = asyncio.Event()
        self._task = asyncio.create_task(self._run(after_id))

    async def _run(self, after_id: int) -> None:
        while True:
            leader = await self.members.find_leader()
            request = pb.SubscribeRequest(after_id=after_id)
            call = self.members.stub(leader).Subscribe(request, metadata=self.auth)
            self.streams += 1
            try:
                async for event in call:
                    if event.HasField("message"):
                        self.received.append(event.message)
                        after_id = event.message.id
                        self._arrived.set()
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRYABLE:
                    raise
            finally:
                call.cancel()
            self.members.forget(leader)
            await asyncio.sleep(POLL_S)

    @property
    def ids(self) -> list[int]:
        return [m.id for m in self.received]

    async def wait_for_id(self, message_id: int, within_s: float = WAIT_S) -> None:
        """Wait until a message with id >= message_id arrived; the stream's error if it died."""
        async with asyncio.timeout(within_s):
            while not (self.received and self.received[-1].id >= message_id):
                if self._task.done():
                    self._task.result()
                    raise AssertionError("the subscription ended")
                self._arrived.clear()
                await self._arrived.wait()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@contextlib.asynccontextmanager
async def subscribed(members: Members, auth: Metadata) -> AsyncIterator[Subscriber]:
    subscriber = Subscriber(members, auth)
    try:
        yield subscriber
    finally:
        await subscriber.close()


async def served_inbox(members: Members, name: str, auth: Metadata) -> list[pb.Message]:
    """Every message to `name` as the leader serves it: Subscribe after_id=0 with `auth`.

    A fresh Login (a write, so linearizable) says which id is the newest; the
    stream is read up to it. `auth` may be an old session: it must still work.
    """
    login = await members.call(
        "Login",
        pb.LoginRequest(username=name, password=PASSWORD, request_id=fresh_request_id("login")),
    )
    if login.last_message_id == 0:
        return []
    async with subscribed(members, auth) as subscriber:
        await subscriber.wait_for_id(login.last_message_id)
        return list(subscriber.received)


# -- checks --------------------------------------------------------------------------------


def assert_exactly_once(
    stored: list[pb.Message], load: Load, forbidden: Iterable[str] = ()
) -> None:
    """Every acknowledged send stored once under its acknowledged id, in id order, nothing else.

    Every send of a stopped Load was acknowledged in the end, so nothing but
    them may be stored; `forbidden` bodies (sends that were refused) least of all.
    """
    ids = [m.id for m in stored]
    assert ids == sorted(set(ids)), "stored messages must be unique and in id order"
    bodies = Counter(m.body for m in stored)
    duplicated = sorted(b for b, n in bodies.items() if n > 1)
    assert not duplicated, f"{len(duplicated)} sends stored twice, e.g. {duplicated[:5]}"
    by_body = {m.body: m.id for m in stored}
    missing = sorted(set(load.acked) - set(by_body))
    assert not missing, f"{len(missing)} acknowledged sends lost, e.g. {missing[:5]}"
    moved = sorted(b for b, i in load.acked.items() if by_body[b] != i)
    assert not moved, f"{len(moved)} sends stored under another id than acked, e.g. {moved[:5]}"
    extra = sorted(set(by_body) - set(load.acked))
    assert not extra, f"{len(extra)} messages stored that no send accounts for: {extra[:5]}"
    leaked = sorted(set(forbidden) & set(by_body))
    assert not leaked, f"refused sends were stored: {leaked[:5]}"
    for writer, acked_ids in load.by_writer.items():
        assert acked_ids == sorted(acked_ids), f"writer {writer}'s later sends got lower ids"


def applied_inbox(cluster: Cluster, node_id: int, name: str) -> list[tuple[int, str, str]]:
    """(id, sender, body) of the messages to `name` in one node's own applied chat state."""
    return replica_inbox(cluster.nodes[node_id].data_dir / "state.db", name)


async def assert_replicas_agree(
    members: Members, name: str, served: list[pb.Message], within_s: float = WAIT_S
) -> None:
    """Every node's own applied state holds exactly the messages the leader served.

    Followers apply committed entries a little after they learn the commit
    index, so this polls until all agree or the deadline passes.
    """
    expected = [(m.id, m.sender, m.body) for m in served]
    cluster = members.cluster
    differing: list[int] = []
    with contextlib.suppress(TimeoutError):
        async for _ in deadline_loop(within_s, "replicas agree"):
            differing = [i for i in cluster.nodes if applied_inbox(cluster, i, name) != expected]
            if not differing:
                return
    summary = {i: len(applied_inbox(cluster, i, name)) for i in differing}
    raise AssertionError(
        f"nodes {differing} hold other messages than the {len(expected)} served: counts {summary}"
    )


async def verify_inbox(
    members: Members, load: Load, name: str, auth: Metadata, forbidden: Iterable[str] = ()
) -> list[pb.Message]:
    """After a stopped load: all caught up, the leader serves each ack once, all nodes agree."""
    await wait_caught_up(members)
    stored = await served_inbox(members, name, auth)
    assert_exactly_once(stored, load, forbidden)
    await assert_replicas_agree(members, name, stored)
    return stored
