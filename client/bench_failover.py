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

from client.bench_cluster import LocalNode, wait_until_healthy
from client.bench_load import BODY, SINK, Account, Fleet
from client.chatctl import on_leader
from client.library import CHANNEL_OPTIONS
from proto import chat_pb2 as pb
from proto import chat_pb2_grpc

ATTEMPT_TIMEOUT_S = 0.5  # per attempt: a stopped leader never answers
PROBE_TIMEOUT_S = 0.1  # per GetClusterStatus while looking for the new leader
WRITE_DEADLINE_S = 30.0
WARM_WRITES = 20
STALE_WRITES = 3
STALE_TIMEOUT_S = 10.0
RETRY_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


@dataclass(frozen=True, slots=True)
class FailoverRuns:
    signal: str
    runs_ms: list[float]
    median_ms: float
    stale_acks: int | None  # SIGSTOP only: writes the continued old leader acknowledged
    stale_outcomes: list[str] | None  # how each ended ("UNAVAILABLE: not the leader" expected)


@dataclass(frozen=True, slots=True)
class FailoverResult:
    kill: FailoverRuns
    stop: FailoverRuns
    attempt_timeout_ms: int


class Writer:
    """A client that writes back to back and rides through a failover.

    Not :class:`client.library.ChatClient`: its calls may wait out the whole
    retry deadline on one node, which against a stopped leader measures the
    deadline, not the failover. This writer bounds each attempt, keeps one
    request id across retries (so a retry cannot duplicate), follows
    ``leader-address`` hints and otherwise asks every member at once.
    """

    def __init__(self, addresses: Sequence[str], account: Account) -> None:
        self.addresses = list(addresses)
        self.account = account
        self.acks: list[tuple[float, str]] = []  # (time, address that acknowledged)
        self.error: BaseException | None = None
        self._leader = ""
        self._running = True
        self._changed = asyncio.Event()
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def run(self) -> None:
        try:
            while self._running:
                await self._write_one()
        except Exception as exc:  # surfaced by wait_until(); the run then fails
            self.error = exc
        finally:
            self._changed.set()

    def stop(self) -> None:
        self._running = False

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

    async def _write_one(self) -> None:
        request = pb.SendMessageRequest(recipient=SINK, body=BODY, request_id=uuid.uuid4().hex)

        async def attempt(address: str) -> pb.SendMessageResponse:
            return await self._stub(address).SendMessage(
                request, metadata=self.account.auth, timeout=ATTEMPT_TIMEOUT_S
            )

        _, self._leader = await on_leader(
            self.addresses,
            attempt,
            WRITE_DEADLINE_S,
            start=self._leader,
            retry_codes=RETRY_CODES,
            probe_wait_s=PROBE_TIMEOUT_S,
        )
        self.acks.append((time.perf_counter(), self._leader))
        self._changed.set()

    def _stub(self, address: str) -> chat_pb2_grpc.ChatServiceStub:
        if address not in self._channels:
            self._channels[address] = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        return chat_pb2_grpc.ChatServiceStub(self._channels[address])

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


async def _connected_stub(address: str) -> tuple[grpc.aio.Channel, chat_pb2_grpc.ChatServiceStub]:
    """A stub whose connection is up now: once the node stops, a new one would never open."""
    channel = grpc.aio.insecure_channel(address)
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
    nodes: Sequence[LocalNode], fleet: Fleet, account: Account, signum: int
) -> tuple[float, list[str]]:
    """One failover; returns (milliseconds, outcomes of the writes queued on the old leader)."""
    leader_id = await wait_until_healthy(nodes)
    old = next(n for n in nodes if n.node_id == leader_id)
    writer = Writer([n.address for n in nodes], account)
    task = asyncio.create_task(writer.run())
    stale_channel, stale_stub = await _connected_stub(old.address)
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
        await writer.close()
        await stale_channel.close()
        fleet.stored += len(writer.acks)
    return round((acked - signalled) * 1000, 1), outcomes


async def _runs(nodes: Sequence[LocalNode], fleet: Fleet, signum: int, count: int) -> FailoverRuns:
    account = (await fleet.accounts(["benchfailover"]))[0]
    times, outcomes = [], []
    for _ in range(count):
        took, stale = await _one_run(nodes, fleet, account, signum)
        times.append(took)
        outcomes += stale
    stopped = signum == signal.SIGSTOP
    return FailoverRuns(
        signal=signal.Signals(signum).name,
        runs_ms=times,
        median_ms=round(statistics.median(times), 1),
        stale_acks=outcomes.count("OK") if stopped else None,
        stale_outcomes=outcomes if stopped else None,
    )


async def measure_failover(nodes: Sequence[LocalNode], fleet: Fleet, runs: int) -> FailoverResult:
    """`runs` kill -9 failovers, then `runs` SIGSTOP ones; the cluster is whole again after."""
    kill = await _runs(nodes, fleet, signal.SIGKILL, runs)
    stop = await _runs(nodes, fleet, signal.SIGSTOP, runs)
    await wait_until_healthy(nodes)
    await fleet.follow_leader()
    return FailoverResult(kill, stop, int(ATTEMPT_TIMEOUT_S * 1000))
