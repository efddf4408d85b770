"""Reaching a cluster: the one channel factory and the one leader finder.

The client library, ``chatctl`` and the bench all open their channels here,
so TLS and reconnect settings are the same everywhere, and all find the
leader the same way: ask every candidate for ``GetClusterStatus`` at once,
then the addresses the followers' answers (or refusals) point to.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from client.status import ClusterStatus, cluster_status
from proto import chat_pb2 as pb
from proto import chat_pb2_grpc

__all__ = [
    "CHANNEL_OPTIONS",
    "Answer",
    "Channels",
    "Search",
    "StatusCall",
    "find_leader",
    "leader_hint",
    "open_channel",
    "status_call",
    "tls_credentials",
    "wait_for_leader",
]

# gRPC's own reconnect back-off grows to 120 s; a node restarted on the same
# address must be reachable again within our retry deadline.
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)
RETRY_PAUSE_S = 0.02


def tls_credentials(
    ca: str | None, cert: str | None = None, key: str | None = None
) -> grpc.ChannelCredentials | None:
    """TLS credentials from PEM files (the CA that signed the nodes, and optionally a client
    certificate and its key), or None for plaintext when no CA is given.

    Raises OSError if a file is unreadable, ValueError if the files do not fit together.
    """
    if not ca:
        if cert or key:
            raise ValueError("--tls-cert and --tls-key need --tls-ca")
        return None
    if bool(cert) != bool(key):
        raise ValueError("--tls-cert and --tls-key go together")
    return grpc.ssl_channel_credentials(
        root_certificates=Path(ca).read_bytes(),
        private_key=Path(key).read_bytes() if key else None,
        certificate_chain=Path(cert).read_bytes() if cert else None,
    )


def open_channel(
    address: str, credentials: grpc.ChannelCredentials | None = None
) -> grpc.aio.Channel:
    """A channel to one member: TLS when credentials are given, plaintext otherwise."""
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    return grpc.aio.secure_channel(address, credentials, CHANNEL_OPTIONS)


class Channels:
    """One channel per key (an address, or anything naming a connection), opened on first use
    and closed together."""

    def __init__(self, credentials: grpc.ChannelCredentials | None = None) -> None:
        self.credentials = credentials
        self._open: dict[str, grpc.aio.Channel] = {}

    def get(self, key: str, address: str | None = None) -> grpc.aio.Channel:
        """The channel for key, to address (default: key itself)."""
        channel = self._open.get(key)
        if channel is None:
            channel = self._open[key] = open_channel(address or key, self.credentials)
        return channel

    async def close(self) -> None:
        channels, self._open = list(self._open.values()), {}
        for channel in channels:
            await channel.close()


def leader_hint(exc: grpc.aio.AioRpcError) -> str:
    """Where a refusing node says the leader is (``leader-address`` trailing metadata)."""
    for key, value in exc.trailing_metadata() or ():
        if key == "leader-address":
            return str(value)
    return ""


StatusCall = Callable[[str, float], Awaitable[ClusterStatus]]
"""GetClusterStatus on the member at an address, with a deadline in seconds."""


def status_call(credentials: grpc.ChannelCredentials | None = None) -> StatusCall:
    """GetClusterStatus on a channel of its own, closed after the call: for tools that ask
    now and then and must see a restarted node at once, not after a reconnect back-off."""

    async def call(address: str, wait_s: float) -> ClusterStatus:
        async with open_channel(address, credentials) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            reply = await stub.GetClusterStatus(pb.GetClusterStatusRequest(), timeout=wait_s)
        return cluster_status(reply)

    return call


@dataclass(frozen=True, slots=True)
class Answer:
    """One member's answer to 'who leads?': its status, or where it points, or why not."""

    address: str
    status: ClusterStatus | None = None
    hint: str = ""
    error: str = ""

    @property
    def leads(self) -> bool:
        return self.status is not None and self.status.role == "leader"


@dataclass(frozen=True, slots=True)
class Search:
    """What a search found: the leader's answer, or None and the last reason why not."""

    leader: Answer | None
    error: str = ""


async def _ask(get_status: StatusCall, address: str, wait_s: float) -> Answer:
    try:
        status = await get_status(address, wait_s)
    except grpc.aio.AioRpcError as exc:
        return Answer(address, hint=leader_hint(exc), error=f"{address}: {exc.details()}")
    return Answer(address, status, hint="" if status.role == "leader" else status.leader_address)


async def _ask_all(
    get_status: StatusCall, addresses: Sequence[str], wait_s: float, first: bool
) -> list[Answer]:
    """Every address's answer; with first, only those until the first leader's."""
    tasks = [asyncio.ensure_future(_ask(get_status, a, wait_s)) for a in addresses]
    if not first:
        return list(await asyncio.gather(*tasks))
    answers = []
    try:
        for next_answer in asyncio.as_completed(tasks):
            answers.append(answer := await next_answer)
            if answer.leads:
                break
    finally:
        for task in tasks:
            task.cancel()
    return answers


async def find_leader(
    candidates: Sequence[str],
    get_status: StatusCall,
    wait_s: float,
    *,
    first: bool = False,
    time_left: Callable[[], float] | None = None,
) -> Search:
    """Ask all candidates at once, then any address they point to, until one leads.

    Among several that claim to lead (a deposed leader may not know yet), the
    highest term wins; ties go to candidate order. With ``first`` the first
    leader to answer wins instead: a stopped (SIGSTOP) member never answers,
    and waiting for it would add wait_s to every search. ``time_left`` bounds
    the search (seconds left of the caller's deadline).
    """
    asked: set[str] = set()
    pending = [a for a in dict.fromkeys(candidates) if a]
    error = ""
    while pending and (time_left is None or time_left() > 0):
        asked.update(pending)
        timeout = wait_s if time_left is None else min(wait_s, time_left())
        answers = await _ask_all(get_status, pending, timeout, first)
        leaders = [a for a in answers if a.leads]
        if leaders:
            return Search(max(leaders, key=lambda a: a.status.term if a.status else 0))
        error = next((a.error for a in answers if a.error), "no member knows a leader")
        pending = list(dict.fromkeys(a.hint for a in answers if a.hint and a.hint not in asked))
    return Search(None, error)


async def wait_for_leader(
    addresses: Sequence[str],
    timeout_s: float,
    credentials: grpc.ChannelCredentials | None = None,
    probe_s: float = 1.0,
) -> str:
    """Poll until some member leads; its address. TimeoutError names the members if none
    does in time."""
    get_status = status_call(credentials)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        search = await find_leader(addresses, get_status, min(probe_s, timeout_s), first=True)
        if search.leader is not None:
            return search.leader.address
        await asyncio.sleep(RETRY_PAUSE_S)
    raise TimeoutError(f"no leader among {', '.join(addresses)} within {timeout_s:g}s")
