"""Crashes, restarts, pauses and hand-overs of real nodes under load (coord/PROTOCOL.md §4-§13).

Three ``chatnode`` processes. Each test puts real client
traffic through kill -9, SIGSTOP/SIGCONT or SIGTERM, then checks the contract
the faults must not break: every acknowledged message stored exactly once, in
id order, under the id it was acknowledged with; a resumed subscription with
no gap and no duplicate; and every node's own applied state equal to what the
leader serves. Helpers are in ``tests/support/faults.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import grpc
import pytest

from chatnode.local_cluster import Cluster
from client.library import ChatClient
from proto import chat_pb2 as pb
from tests.support.faults import (
    HEARTBEAT_MS,
    LEASE_S,
    POLL_S,
    WAIT_S,
    Load,
    Members,
    Metadata,
    deadline_loop,
    kill,
    running_cluster,
    settle,
    sign_up,
    subscribed,
    verify_inbox,
    wait_caught_up,
    wait_in_sync,
    wait_new_leader,
)
from tests.support.nodes import PASSWORD

pytestmark = pytest.mark.timeout(120)

ACKS = 25  # acknowledged sends each phase must reach before the next fault


async def writer_and_sink(members: Members) -> tuple[Metadata, Metadata]:
    """Sign up the sending and the receiving user, then let every node clear `restarted`."""
    writer, sink = await sign_up(members, "writer"), await sign_up(members, "sink")
    await settle(members, "writer")
    return writer, sink


async def pick(members: Members, role: str) -> int:
    """The live node that has `role` now: leader, low-follower, high-follower, or follower.

    "follower" means the only live follower (after one node is gone).
    """
    leader = await members.find_leader()
    followers = sorted(i for i, n in members.cluster.nodes.items() if n.running and i != leader)
    match role:
        case "leader":
            return leader
        case "low-follower":
            return followers[0]
        case "high-follower":
            return followers[-1]
        case "follower":
            assert len(followers) == 1, f"expected one live follower, found {followers}"
            return followers[0]
    raise ValueError(role)


def restart(cluster: Cluster, *node_ids: int) -> None:
    for node_id in node_ids:
        cluster.nodes[node_id].start()


# -- 1. two kill -9s in every order --------------------------------------------------------

KILL_ORDERS = [
    pytest.param("leader", "leader", id="leader-then-new-leader"),
    pytest.param("leader", "follower", id="leader-then-follower"),
    pytest.param("low-follower", "leader", id="low-follower-then-leader"),
    pytest.param("low-follower", "follower", id="low-follower-then-high-follower"),
    pytest.param("high-follower", "leader", id="high-follower-then-leader"),
    pytest.param("high-follower", "follower", id="high-follower-then-low-follower"),
]


@pytest.mark.parametrize(("first", "second"), KILL_ORDERS)
async def test_two_kills_in_any_order_lose_nothing(tmp_path, first: str, second: str) -> None:
    """Writes go on before, between and after the kills; the dead return and catch up."""
    async with running_cluster(tmp_path) as (cluster, members):
        writer, sink = await writer_and_sink(members)
        load = Load(members, writer, "sink").start()
        await load.run_phase("before", ACKS)
        victims = []
        for phase, role in (("between", first), ("after", second)):
            victims.append(await pick(members, role))
            kill(members, victims[-1])
            await load.run_phase(phase, ACKS)
        survivor = await members.find_leader()
        assert survivor not in victims
        await load.stop()
        restart(cluster, *victims)
        await verify_inbox(members, load, "sink", sink)


# -- 2. everything down at once ---------------------------------------------------------------


async def test_a_full_restart_keeps_sessions_and_data(tmp_path) -> None:
    """kill -9 all three mid-load; after the restart the old tokens still work."""
    async with running_cluster(tmp_path) as (cluster, members):
        writer, sink = await writer_and_sink(members)
        load = Load(members, writer, "sink").start()
        await load.run_phase("before", ACKS)
        for node_id in cluster.nodes:
            kill(members, node_id)
        load.phase = "outage"  # the senders keep retrying through it
        restart(cluster, *cluster.nodes)
        await load.run_phase("after", ACKS)  # with the writer's session from before
        await load.stop()
        await verify_inbox(members, load, "sink", sink)  # read with the sink's old session


# -- 3. the last survivor ----------------------------------------------------------------------


async def assert_no_leader_and_no_writes(
    members: Members, node_ids: list[int], auth: Metadata, seconds: float
) -> None:
    """For `seconds`, none of node_ids leads, and each refuses a write with UNAVAILABLE."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        for node_id, status in (await members.statuses(node_ids)).items():
            assert status.role != "leader", f"node {node_id} leads without the last survivor"
        await asyncio.sleep(POLL_S)
    for node_id in node_ids:
        request = pb.SendMessageRequest(recipient="sink", body="refused", request_id="refused")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await members.stub(node_id).SendMessage(request, metadata=auth, timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def wait_all_answer(members: Members, node_ids: list[int]) -> None:
    async for _ in deadline_loop(WAIT_S, f"nodes {node_ids} answering"):
        if (await members.statuses(node_ids)).keys() == set(node_ids):
            return


@pytest.mark.parametrize("role", ["leader", "low-follower"], ids=lambda r: f"x-was-{r}")
async def test_without_the_last_survivor_nobody_leads(tmp_path, role: str) -> None:
    """X alone holds the newest acked writes; the other two, restarted, must wait for X.

    X starts as the leader (it only shrinks its ISR) or as a follower (it must
    first win an election alone after the leader dies).
    """
    async with running_cluster(tmp_path) as (cluster, members):
        writer, sink = await writer_and_sink(members)
        load = Load(members, writer, "sink").start()
        await load.run_phase("all-three", ACKS)
        survivor = await pick(members, role)
        others = [i for i in cluster.nodes if i != survivor]
        for phase, node_id in zip(("two", "survivor-alone"), others, strict=True):
            kill(members, node_id)
            await load.run_phase(phase, ACKS)
        await load.stop()
        kill(members, survivor)
        restart(cluster, *others)
        await wait_all_answer(members, others)
        await assert_no_leader_and_no_writes(members, others, writer, 3 * LEASE_S)
        restart(cluster, survivor)
        assert await members.find_leader() == survivor, "only X knows the newest epoch"
        await verify_inbox(members, load, "sink", sink)


# -- 4 and 5. two failovers under traffic ------------------------------------------------------


async def fail_over_twice(members: Members, between: Callable[[str], Awaitable[None]]) -> None:
    """Kill the leader, let traffic flow, restart it; then the same to the next leader.

    `between(phase)` runs after each failover (and after each rejoin), while
    the cluster is one node short; it must make progress that needs a leader.
    """
    cluster = members.cluster
    for round_ in ("first", "second"):
        leader = await members.find_leader()
        kill(members, leader)
        await wait_new_leader(members, leader)
        await between(f"after-{round_}-kill")
        restart(cluster, leader)
        await wait_in_sync(members, leader)
        await between(f"after-{round_}-rejoin")


async def test_concurrent_senders_survive_two_leader_kills_exactly_once(tmp_path) -> None:
    """Retried sends keep their request id: none is lost and none stored twice."""
    async with running_cluster(tmp_path) as (_, members):
        writer, sink = await writer_and_sink(members)
        load = Load(members, writer, "sink", writers=4).start()
        await load.run_phase("start", ACKS)

        async def more_acks(phase: str) -> None:
            await load.run_phase(phase, ACKS)

        await fail_over_twice(members, more_acks)
        await load.stop()
        stored = await verify_inbox(members, load, "sink", sink)
        assert load.retried, "no send was in flight across a failover: nothing was retried"
        await assert_replays_change_nothing(members, load, writer, stored)


async def assert_replays_change_nothing(
    members: Members, load: Load, auth: Metadata, stored: list[pb.Message]
) -> None:
    """Sending again with a used request id answers the first id and stores nothing new."""
    replayed = sorted(load.retried)[:10] + sorted(load.acked)[:10]
    for request_id in replayed:
        request = pb.SendMessageRequest(recipient="sink", body=request_id, request_id=request_id)
        reply = await members.call("SendMessage", request, auth)
        assert reply.message_id == load.acked[request_id], f"replay of {request_id} moved"
    await wait_caught_up(members)
    login = await members.call(
        "Login", pb.LoginRequest(username="sink", password=PASSWORD, request_id="last")
    )
    assert login.last_message_id == stored[-1].id, "a replay stored a new message"


async def test_a_subscription_resumes_across_two_failovers(tmp_path) -> None:
    """Resuming after the last id seen gives every committed message once, in order."""
    async with running_cluster(tmp_path) as (_, members):
        writer, sink = await writer_and_sink(members)
        acked: list[int] = []

        async def send(phase: str) -> None:
            for seq in range(5):
                body = f"{phase}/{seq}"
                request = pb.SendMessageRequest(recipient="sink", body=body, request_id=body)
                acked.append((await members.call("SendMessage", request, writer)).message_id)

        async with subscribed(members, sink) as subscriber:
            await send("start")
            await subscriber.wait_for_id(acked[-1])
            await fail_over_twice(members, send)
            await wait_caught_up(members)
            await subscriber.wait_for_id(acked[-1])
            received = subscriber.ids
            streams = subscriber.streams
        assert streams >= 3, "the stream should have broken with each killed leader"
        assert received == sorted(set(received)), f"gap-free resume broke order: {received}"
        assert received == acked, "every acked message once, and nothing else was sent"


# -- clients that do not fail over ----------------------------------------------------------

PINNED_SENDERS = 3
Outcome = tuple[grpc.StatusCode, str]  # a reply's status and its leader-address hint


class PinnedSender:
    """Senders that call one node only, over and over, and log every reply.

    They stand for clients that do not know yet that the node stopped leading:
    whatever that node answers them is what such clients see.
    """

    def __init__(
        self, members: Members, node_id: int, auth: Metadata, senders: int = PINNED_SENDERS
    ) -> None:
        self.outcomes: list[Outcome] = []
        self.bodies: list[str] = []
        self._stub = members.stub(node_id)
        self._auth = auth
        self._replied = asyncio.Event()
        self._tasks = [asyncio.create_task(self._send(i)) for i in range(senders)]

    async def _send(self, sender: int) -> None:
        for seq in itertools.count():
            body = f"pinned/{sender}/{seq}"
            self.bodies.append(body)
            request = pb.SendMessageRequest(recipient="sink", body=body, request_id=body)
            try:
                await self._stub.SendMessage(request, metadata=self._auth, timeout=WAIT_S)
            except grpc.aio.AioRpcError as exc:
                hint = dict(exc.trailing_metadata() or ()).get("leader-address", "")
                self.outcomes.append((exc.code(), str(hint)))
                self._replied.set()
                await asyncio.sleep(POLL_S)  # pacing, so a refusing node is not spun on
            else:
                self.outcomes.append((grpc.StatusCode.OK, ""))
                self._replied.set()

    async def wait_until(self, done: Callable[[list[Outcome]], bool], what: str) -> None:
        """Wait until the replies so far satisfy `done`."""
        try:
            async with asyncio.timeout(WAIT_S):
                while not done(self.outcomes):
                    self._replied.clear()
                    await self._replied.wait()
        except TimeoutError:
            raise AssertionError(f"pinned senders: never {what}; got {self.codes()}") from None

    def codes(self) -> Counter[grpc.StatusCode]:
        return Counter(code for code, _ in self.outcomes)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


# -- 6. SIGTERM ----------------------------------------------------------------------------------

SLOW_LEASE_MS = 2000  # long enough that "well under a lease" cannot be an election by timeout
SLOW_ARGS = ("--lease-ms", str(SLOW_LEASE_MS), "--heartbeat-ms", str(HEARTBEAT_MS))


async def test_sigterm_hands_leadership_to_a_follower_and_exits_zero(tmp_path) -> None:
    async with running_cluster(tmp_path, SLOW_ARGS) as (cluster, members):
        writer, sink = await writer_and_sink(members)
        load = Load(members, writer, "sink").start()
        await load.run_phase("before", ACKS)
        leader = await members.find_leader()
        started = time.monotonic()
        cluster.nodes[leader].signal(signal.SIGTERM)
        await wait_new_leader(members, leader, within_s=SLOW_LEASE_MS / 1000)
        took = time.monotonic() - started
        assert took < SLOW_LEASE_MS / 2000, f"hand-over took {took:.2f}s: that is an election"
        await load.run_phase("after", ACKS)
        await load.stop()
        await assert_clean_exit(cluster, leader)
        cluster.nodes[leader].start()
        await verify_inbox(members, load, "sink", sink)


async def assert_clean_exit(cluster: Cluster, node_id: int) -> None:
    node = cluster.nodes[node_id]
    assert await asyncio.to_thread(node.wait, 15) == 0
    assert "Traceback" not in node.log_text()


async def test_sigterm_of_the_leader_shows_clients_no_error(tmp_path) -> None:
    """A planned restart of the leader must not reach users as an error.

    32 senders share the product's client while the leader gets SIGTERM, twice.
    Calls racing the stop are redirected (UNAVAILABLE with leader-address during
    the hand-over) or, if the stopping server cancels them, retried with their
    request id: no send may raise, and each lands exactly once.
    """
    async with (
        running_cluster(tmp_path, SLOW_ARGS) as (cluster, members),
        ChatClient(cluster.addresses) as client,
    ):
        await client.create_account("burst", PASSWORD)
        await client.login("burst", PASSWORD)
        acked: list[int] = []
        for _ in range(2):
            leader = await members.find_leader()
            async with BurstSenders(client, acked, senders=32) as burst:
                await burst.until(len(acked) + 300)
                cluster.nodes[leader].signal(signal.SIGTERM)
                await assert_clean_exit(cluster, leader)
                await burst.until(len(acked) + 100)  # served by the new leader
            restart(cluster, leader)
            await wait_in_sync(members, leader)
        stored = await read_all(client)
    assert sorted(stored) == sorted(acked) and len(set(stored)) == len(stored)


class BurstSenders:
    """Senders writing back to back through one ChatClient until the block ends.

    Leaving the block stops them and re-raises the first error any send met.
    """

    def __init__(self, client: ChatClient, acked: list[int], senders: int) -> None:
        self._client, self._acked, self._count = client, acked, senders
        self._more = asyncio.Event()
        self._running = True
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> BurstSenders:
        self._tasks = [asyncio.create_task(self._send(i)) for i in range(self._count)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._running = False
        await asyncio.wait_for(asyncio.gather(*self._tasks), WAIT_S)

    async def _send(self, worker: int) -> None:
        try:
            while self._running:
                sent = await self._client.send_message("burst", f"w{worker}")
                self._acked.append(sent.message_id)
                self._more.set()
        finally:
            self._more.set()

    async def until(self, count: int) -> None:
        """Wait until count sends are acknowledged; a failed sender fails the wait."""
        async with asyncio.timeout(WAIT_S):
            while len(self._acked) < count:
                for task in self._tasks:
                    if task.done():
                        task.result()
                self._more.clear()
                await self._more.wait()


async def read_all(client: ChatClient) -> list[int]:
    """Every stored message's id, through ReadMessages pages."""
    ids: list[int] = []
    while batch := (await client.read_messages(1000)).messages:
        ids += [m.id for m in batch]
    return ids


# -- 7. SIGSTOP ----------------------------------------------------------------------------------


async def test_a_paused_leader_is_replaced_and_acknowledges_nothing_on_waking(tmp_path) -> None:
    async with running_cluster(tmp_path) as (cluster, members):
        writer, sink = await writer_and_sink(members)
        load = Load(members, writer, "sink").start()
        await load.run_phase("before", ACKS)
        paused = await members.find_leader()
        await members.status(paused)  # the pinned sender's channel is connected
        started = time.monotonic()
        cluster.nodes[paused].signal(signal.SIGSTOP)
        members.forget(paused)
        pinned = PinnedSender(members, paused, writer)  # every request meets a paused node
        try:
            successor = await wait_new_leader(members, paused, within_s=10 * LEASE_S)
            took = time.monotonic() - started
            # A paused process still accepts connections: only the lease can end its term.
            assert LEASE_S / 2 <= took < 6 * LEASE_S, f"replaced after {took:.2f}s"
            await load.run_phase("paused", ACKS)
            cluster.nodes[paused].signal(signal.SIGCONT)
            await wait_in_sync(members, paused)  # it rejoined, as a follower
            status = await members.status(paused)
            assert status is not None and status.role == "follower"
            assert status.leader_id == successor
            # They keep trying; the woken node keeps refusing, pointing at the new leader.
            enough = len(pinned.outcomes) + 2 * PINNED_SENDERS
            await pinned.wait_until(
                lambda got: len(got) >= enough and got[-1][1] == status.leader_address,
                "redirected to the new leader",
            )
        finally:
            await pinned.stop()
        codes = pinned.codes()
        assert not codes[grpc.StatusCode.OK], f"the deposed leader acknowledged writes: {codes}"
        assert set(codes) == {grpc.StatusCode.UNAVAILABLE}, codes
        await load.stop()
        await verify_inbox(members, load, "sink", sink, forbidden=pinned.bodies)


async def test_a_follower_stalled_past_a_lease_never_leads_with_missing_writes(tmp_path) -> None:
    """A live follower paused for 1.5 leases under load is dropped from the ISR while
    it misses writes. The leader and the other follower then die: the stale node, alive and
    alone, must not lead on its old view; once the others are back, nothing is lost."""
    async with running_cluster(tmp_path) as (cluster, members):
        writer, sink = await writer_and_sink(members)
        load = Load(members, writer, "sink").start()
        await load.run_phase("all-three", ACKS)
        stale = await pick(members, "low-follower")
        others = [i for i in cluster.nodes if i != stale]
        cluster.nodes[stale].signal(signal.SIGSTOP)
        members.forget(stale)
        stalled = time.monotonic()
        await load.run_phase("stale-paused", ACKS)
        await asyncio.sleep(max(0.0, 1.5 * LEASE_S - (time.monotonic() - stalled)))  # the fault
        await load.run_phase("after-the-stall", ACKS)
        await load.stop()
        cluster.nodes[stale].signal(signal.SIGCONT)
        for node_id in others:
            kill(members, node_id)
        await assert_no_leader_and_no_writes(members, [stale], writer, 3 * LEASE_S)
        restart(cluster, *others)
        await verify_inbox(members, load, "sink", sink)
