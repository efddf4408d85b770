"""Leader failover time: from kill -9 or SIGSTOP of the leader to the next acknowledged write.

A writer sends back to back through the whole run. The figure is the time
from the signal to the first write acknowledged by another node; it includes
the followers noticing (a refused connection after kill -9; an expired lease
after SIGSTOP), the election, the new leader's first commit, and the writer
finding it. Before each run every node is in the ISR again: a killed leader
is restarted, a stopped one continued.

After SIGSTOP the old leader must acknowledge nothing once continued: writes
queued on a connection it accepted before it stopped are its first input on
waking, and each must be refused (counted in ``stale_acks`` otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc

from bench.load import BODY, PASSWORD, SINK, Account, Fleet
from bench.nodes import Controllable, wait_until_healthy
from client.connect import open_channel
from client.library import ChatClient, Connection, RetryPolicy
from proto import chat_pb2 as pb
from proto import chat_pb2_grpc

# The client's waits, shortened so the figure is the cluster's failover and not the
# client's patience: an attempt on a stopped leader is given up after 0.5 s (the
# library's default is 3 s), a probe after 0.1 s, and pauses between tries stay short.
POLICY = RetryPolicy(
    deadline_s=30.0,
    first_backoff_s=0.02,
    max_backoff_s=0.1,
    probe_timeout_s=0.1,
    attempt_timeout_s=0.5,
)
WARM_WRITES = 20
STALE_WRITES = 3
STALE_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class FailoverRuns:
    signal: str
    runs_ms: list[float]
    median_ms: float
    # How long the writer's connection state (the chat app's status bar) read
    # "failing over" or "no leader" in each run, from the signal on.
    status_bar_ms: list[float]
    status_bar_median_ms: float
    stale_acks: int | None  # SIGSTOP only: writes the continued old leader acknowledged
    stale_outcomes: list[str] | None  # how each ended ("UNAVAILABLE: not the leader" expected)


@dataclass(frozen=True, slots=True)
class FailoverResult:
    kill: FailoverRuns
    stop: FailoverRuns
    attempt_timeout_ms: int


class Writer:
    """Writes back to back through the product's client, noting who acknowledged each write.

    :class:`client.library.ChatClient` keeps one request id across retries (a
    retry cannot duplicate), follows ``leader-address`` hints and otherwise
    probes every member; POLICY only shortens its waits.
    """

    def __init__(self, client: ChatClient) -> None:
        self.client = client
        self.acks: list[tuple[float, str]] = []  # (time, address that acknowledged)
        self.error: BaseException | None = None
        self._running = True
        self._changed = asyncio.Event()
        self.states: list[tuple[float, Connection]] = []
        self._unlisten = client.add_state_listener(
            lambda state: self.states.append((time.perf_counter(), state.connection))
        )

    async def run(self) -> None:
        try:
            while self._running:
                await self.client.send_message(SINK, BODY)
                self.acks.append((time.perf_counter(), self.client.state.address))
                self._changed.set()
        except Exception as exc:  # surfaced by wait_until(); the run then fails
            self.error = exc
        finally:
            self._changed.set()

    def stop(self) -> None:
        self._running = False
        self._unlisten()

    def not_connected_ms(self, since: float, until: float) -> float:
        """Milliseconds in [since, until] during which the state was not 'connected'."""
        total, down_at = 0.0, None
        for at, connection in [*self.states, (until, Connection.CONNECTED)]:
            if at < since or at > until:
                continue
            if connection is Connection.CONNECTED and down_at is not None:
                total, down_at = total + at - down_at, None
            elif connection is not Connection.CONNECTED and down_at is None:
                down_at = at
        return round(total * 1000, 1)

    async def wait_until(self, found: Callable[[], float | None]) -> float:
        """Wait for found() to return a time; it is checked after each acknowledged write."""
        while (when := found()) is None:
            if self.error is not None:
                raise self.error
            self._changed.clear()
            await self._changed.wait()
        return when

    def nth_ack(self, n: int) -> float | None:
        return self.acks[n - 1][0] if len(self.acks) >= n else None

    def first_ack(self, after: float, not_from: str) -> float | None:
        return next((t for t, a in self.acks if t > after and a != not_from), None)


async def _connected_stub(
    address: str, credentials: grpc.ChannelCredentials | None
) -> tuple[grpc.aio.Channel, chat_pb2_grpc.ChatServiceStub]:
    """A stub whose connection is up now: once the node stops, a new one would never open."""
    channel = open_channel(address, credentials)
    stub = chat_pb2_grpc.ChatServiceStub(channel)
    await stub.GetClusterStatus(pb.GetClusterStatusRequest(), timeout=5)
    return channel, stub


async def _stale_write(stub: chat_pb2_grpc.ChatServiceStub, account: Account) -> str:
    """A write sent to the stopped leader; how it ended once the leader was continued."""
    request = pb.SendMessageRequest(recipient=SINK, body=BODY, request_id=uuid.uuid4().hex)
    try:
        await stub.SendMessage(request, metadata=account.auth, timeout=STALE_TIMEOUT_S)
    except grpc.aio.AioRpcError as exc:
        return f"{exc.code().name}: {exc.details()}"
    return "OK"


async def _one_run(
    nodes: Sequence[Controllable], fleet: Fleet, client: ChatClient, account: Account, signum: int
) -> tuple[float, float, list[str]]:
    """One failover: (milliseconds to the next ack, milliseconds the state was not
    'connected', outcomes of the writes queued on the old leader)."""
    leader_id = await wait_until_healthy(nodes, fleet.credentials)
    old = next(n for n in nodes if n.node_id == leader_id)
    writer = Writer(client)
    task = asyncio.create_task(writer.run())
    stale_channel, stale_stub = await _connected_stub(old.address, fleet.credentials)
    try:
        await writer.wait_until(lambda: writer.nth_ack(WARM_WRITES))
        signalled = time.perf_counter()
        old.signal(signum)
        stale = [
            asyncio.create_task(_stale_write(stale_stub, account))
            for _ in range(STALE_WRITES if signum == signal.SIGSTOP else 0)
        ]
        acked = await writer.wait_until(lambda: writer.first_ack(signalled, old.address))
        if signum == signal.SIGSTOP:
            old.signal(signal.SIGCONT)
        else:
            old.start()  # same data dir and port: it rejoins as a follower
        outcomes = list(await asyncio.gather(*stale))
    finally:
        writer.stop()
        with contextlib.suppress(Exception):
            await task
        await stale_channel.close()
        fleet.stored += len(writer.acks)
    return round((acked - signalled) * 1000, 1), writer.not_connected_ms(signalled, acked), outcomes


async def _runs(
    nodes: Sequence[Controllable], fleet: Fleet, signum: int, count: int
) -> FailoverRuns:
    account = (await fleet.accounts(["benchfailover"]))[0]
    times, shown, outcomes = [], [], []
    addresses = [n.address for n in nodes]
    async with ChatClient(addresses, credentials=fleet.credentials, policy=POLICY) as client:
        await client.login(account.name, PASSWORD)
        for _ in range(count):
            took, failing_over, stale = await _one_run(nodes, fleet, client, account, signum)
            times.append(took)
            shown.append(failing_over)
            outcomes += stale
    stopped = signum == signal.SIGSTOP
    return FailoverRuns(
        signal=signal.Signals(signum).name,
        runs_ms=times,
        median_ms=round(statistics.median(times), 1),
        status_bar_ms=shown,
        status_bar_median_ms=round(statistics.median(shown), 1),
        stale_acks=outcomes.count("OK") if stopped else None,
        stale_outcomes=outcomes if stopped else None,
    )


async def measure_failover(
    nodes: Sequence[Controllable], fleet: Fleet, runs: int
) -> FailoverResult:
    """`runs` kill -9 failovers, then `runs` SIGSTOP ones; the cluster is whole again after."""
    kill = await _runs(nodes, fleet, signal.SIGKILL, runs)
    stop = await _runs(nodes, fleet, signal.SIGSTOP, runs)
    await wait_until_healthy(nodes, fleet.credentials)
    await fleet.follow_leader()
    return FailoverResult(kill, stop, int(POLICY.attempt_timeout_s * 1000))
