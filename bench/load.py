"""Load generation shared by every bench part: signed-in accounts, concurrent senders, figures.

Each simulated client is one account with its own gRPC channel (one TCP
connection), as real clients are. Latencies are measured around each send:
the reply means the message is committed (fsynced by every in-sync replica)
and applied on the leader. Two paths:

- ``stream``, the product's own: each client is a :class:`client.library.ChatClient`
  sending on its Session stream, as ``chat`` does;
- ``unary``: a bare ``SendMessage`` stub call per message, the fixed contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc

from client.connect import Channels, wait_for_leader
from client.library import ChatClient
from proto import chat_pb2 as pb
from proto import chat_pb2_grpc

PASSWORD = "bench-password"
SINK = "benchsink"
READY_TIMEOUT_S = 30.0
CALL_TIMEOUT_S = 30.0  # generous: a bulk load of hundreds of clients queues on purpose
SIGN_IN_BATCH = 32  # concurrent sign-ins; each costs the leader two scrypt hashes
FILL_ROUND = 20_000  # bulk loads report progress after each round of this many messages
BODY = "x" * 100
PATHS = ("stream", "unary")

Metadata = tuple[tuple[str, str], ...]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    auth: Metadata
    last_message_id: int  # the newest message addressed to it when it signed in


@dataclass(frozen=True, slots=True)
class LoadResult:
    path: str
    clients: int
    messages: int
    seconds: float
    per_second: float
    p50_ms: float
    p99_ms: float
    fsyncs_per_1000: float | None
    entries_per_peer_write: float | None  # messages per write on the leader's peer streams
    # CPU time per message of the leader, of a follower (their mean) and of this load
    # generator: steadier than msg/s on a shared machine (bench's own cluster only)
    cpu_ms_per_message: dict[str, float] | None = None


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    rank = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


def p50_p99_ms(seconds: Sequence[float]) -> tuple[float, float]:
    """Median and 99th percentile in milliseconds, rounded for the report."""
    ordered = sorted(seconds)
    return round(percentile(ordered, 0.50) * 1000, 3), round(percentile(ordered, 0.99) * 1000, 3)


class Fleet:
    """The bench's accounts, signed in once, each with its own channel to the current leader.

    Signing in costs the leader two scrypt hashes (~50 ms each), so all parts
    share the accounts; a failover only re-points the channels (tokens are
    replicated state, valid on any leader). ``stored`` counts the messages the
    bench has had acknowledged, which is what "after N stored messages" means
    on the bench's own fresh cluster.
    """

    def __init__(
        self, addresses: Sequence[str], credentials: grpc.ChannelCredentials | None = None
    ) -> None:
        self.addresses = list(addresses)
        self.credentials = credentials  # every channel of the bench, the library's included
        self.leader = ""
        self.stored = 0
        self._accounts: dict[str, Account] = {}
        self._channels = Channels(credentials)  # one per account, to the leader
        self._clients: dict[str, ChatClient] = {}

    async def follow_leader(self, timeout_s: float = READY_TIMEOUT_S) -> str:
        """Find the leader; channels to a former leader are closed and reopened lazily."""
        leader = await wait_for_leader(self.addresses, timeout_s, self.credentials)
        if leader != self.leader:
            await self.close()
            self.leader = leader
        return leader

    def stub(self, name: str) -> chat_pb2_grpc.ChatServiceStub:
        """The stub on account name's own channel to the leader."""
        return chat_pb2_grpc.ChatServiceStub(self._channels.get(name, self.leader))

    async def accounts(self, names: Sequence[str]) -> list[Account]:
        """The named accounts, created and signed in on first use, a batch at a time."""
        return await _made_once(names, self._accounts, self._sign_in)

    async def session_clients(self, names: Sequence[str]) -> list[ChatClient]:
        """A library client per named account, logged in and its stream open."""
        await self.accounts(names)
        return await _made_once(names, self._clients, self._client)

    async def _client(self, name: str) -> ChatClient:
        client = ChatClient(self.addresses, credentials=self.credentials)
        await client.login(name, PASSWORD)
        await client.send_message(SINK, BODY)  # opens the stream before anything is timed
        self.stored += 1
        return client

    async def _sign_in(self, name: str) -> Account:
        stub = self.stub(name)
        with contextlib.suppress(grpc.aio.AioRpcError):  # exists from an earlier run
            await stub.CreateAccount(pb.CreateAccountRequest(username=name, password=PASSWORD))
        login = await stub.Login(pb.LoginRequest(username=name, password=PASSWORD))
        auth = (("authorization", f"Bearer {login.session_token}"),)
        return Account(name, auth, login.last_message_id)

    async def close(self) -> None:
        await self._channels.close()
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()


async def _made_once(
    names: Sequence[str], made: dict[str, T], make: Callable[[str], Awaitable[T]]
) -> list[T]:
    """made[name] for each name, making the missing ones SIGN_IN_BATCH at a time: each
    costs the leader a sign-in, two scrypt hashes, so a batch bounds the queue there."""
    missing = [n for n in dict.fromkeys(names) if n not in made]
    for start in range(0, len(missing), SIGN_IN_BATCH):
        batch = missing[start : start + SIGN_IN_BATCH]
        for name, item in zip(batch, await asyncio.gather(*map(make, batch)), strict=True):
            made[name] = item
    return [made[n] for n in names]


def sender_names(clients: int) -> list[str]:
    return [f"bench{i}" for i in range(clients)]


async def send_load(
    fleet: Fleet, clients: int, messages: int, path: str = "unary"
) -> tuple[float, list[float]]:
    """`clients` concurrent senders to one sink, `messages` in all, on `path`;
    (seconds, latencies)."""
    await fleet.accounts([SINK])
    names = sender_names(clients)
    sends = await (_stream_sends(fleet, names) if path == "stream" else _unary_sends(fleet, names))
    latencies: list[float] = []
    per_client = max(1, messages // clients)

    async def sender(send: Callable[[], Awaitable[object]]) -> None:
        for _ in range(per_client):
            started = time.perf_counter()
            await send()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(sender(s) for s in sends))
    finally:
        fleet.stored += len(latencies)
    return time.perf_counter() - started, latencies


async def _unary_sends(fleet: Fleet, names: Sequence[str]) -> list[Callable[[], Awaitable[object]]]:
    request = pb.SendMessageRequest(recipient=SINK, body=BODY)

    def sends(account: Account) -> Callable[[], Awaitable[object]]:
        stub = fleet.stub(account.name)
        return lambda: stub.SendMessage(request, metadata=account.auth, timeout=CALL_TIMEOUT_S)

    return [sends(a) for a in await fleet.accounts(names)]


async def _stream_sends(
    fleet: Fleet, names: Sequence[str]
) -> list[Callable[[], Awaitable[object]]]:
    def sends(client: ChatClient) -> Callable[[], Awaitable[object]]:
        return lambda: client.send_message(SINK, BODY)

    return [sends(c) for c in await fleet.session_clients(names)]


COUNTERS = ("chat_log_fsyncs_total", "chat_peer_entry_writes_total", "chat_peer_entries_sent_total")


def read_counters(metrics_url: str) -> dict[str, float]:
    """The leader's counters the bench reports, from its Prometheus endpoint."""
    with urllib.request.urlopen(metrics_url, timeout=5) as reply:  # loopback only
        text = reply.read().decode()
    counters = {}
    for name in COUNTERS:
        match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"no {name} at {metrics_url}")
        counters[name] = float(match.group(1))
    return counters


CpuProbe = Callable[[], dict[str, float]]
"""CPU seconds so far of the leader, a follower (mean) and the load generator."""


async def measure(
    fleet: Fleet,
    clients: int,
    messages: int,
    metrics_url: str | None,
    path: str = "unary",
    cpu: CpuProbe | None = None,
) -> LoadResult:
    """One throughput level on one path; with the leader's metrics, its fsyncs per 1,000
    messages and the entries each write to a follower carried; with cpu, CPU per message."""
    if path == "stream":
        await fleet.session_clients(sender_names(clients))  # log-ins are not timed
    before = read_counters(metrics_url) if metrics_url else None
    cpu_before = cpu() if cpu else None
    elapsed, latencies = await send_load(fleet, clients, messages, path)
    cpu_per_message = None
    if cpu and cpu_before is not None:
        cpu_after = cpu()
        cpu_per_message = {
            k: round((cpu_after[k] - cpu_before[k]) * 1000 / len(latencies), 3) for k in cpu_after
        }
    fsyncs = per_write = None
    if metrics_url and before is not None:
        after = read_counters(metrics_url)
        delta = {k: after[k] - before[k] for k in COUNTERS}
        fsyncs = round(delta["chat_log_fsyncs_total"] * 1000 / len(latencies), 1)
        writes = delta["chat_peer_entry_writes_total"]
        per_write = round(delta["chat_peer_entries_sent_total"] / writes, 2) if writes else None
    p50, p99 = p50_p99_ms(latencies)
    return LoadResult(
        path=path,
        clients=clients,
        messages=len(latencies),
        seconds=round(elapsed, 3),
        per_second=round(len(latencies) / elapsed, 1),
        p50_ms=p50,
        p99_ms=p99,
        fsyncs_per_1000=fsyncs,
        entries_per_peer_write=per_write,
        cpu_ms_per_message=cpu_per_message,
    )


async def fill(fleet: Fleet, target: int, clients: int) -> float:
    """Send until the bench has stored `target` messages; return the rate achieved (msg/s).

    Rounds of FILL_ROUND messages, so a long load shows its progress on stderr. Over
    Session streams, the fastest path.
    """
    await fleet.session_clients(sender_names(clients))  # sign-ins are not part of the rate
    sent, started = 0, time.perf_counter()
    while fleet.stored < target:
        round_size = min(FILL_ROUND, target - fleet.stored)
        _, latencies = await send_load(fleet, min(clients, round_size), round_size, "stream")
        sent += len(latencies)
        if target > FILL_ROUND:
            rate = sent / (time.perf_counter() - started)
            print(f"bench: {fleet.stored:,}/{target:,} stored, {rate:,.0f} msg/s", file=sys.stderr)
    return round(sent / max(time.perf_counter() - started, 1e-9), 1)
