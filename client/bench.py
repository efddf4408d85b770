"""``chatctl bench``: committed SendMessage throughput and latency, measured end to end.

By default it starts its own local cluster in a temporary folder (real
``chatnode`` processes, fsync on) so the figures are reproducible with one
command; ``--cluster`` measures a running cluster instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc

from proto import chat_pb2 as pb
from proto import chat_pb2_grpc

PASSWORD = "bench-password"
READY_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class LoadResult:
    clients: int
    messages: int
    seconds: float
    per_second: float
    p50_ms: float
    p99_ms: float
    fsyncs_per_1000: float | None


@dataclass(frozen=True, slots=True)
class LocalNode:
    node_id: int
    address: str
    metrics_url: str
    proc: subprocess.Popen[bytes]


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    rank = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def local_cluster(size: int, extra_args: Sequence[str] = ()) -> Iterator[list[LocalNode]]:
    """Start `size` chatnode processes on loopback in a temp dir; kill them on exit."""
    with tempfile.TemporaryDirectory(prefix="chat-bench-") as tmp:
        addresses = {i: f"127.0.0.1:{_free_port()}" for i in range(1, size + 1)}
        spec = ",".join(f"{i}={a}" for i, a in addresses.items())
        nodes = []
        try:
            for node_id, address in addresses.items():
                metrics = f"127.0.0.1:{_free_port()}"
                args = [
                    sys.executable, "-m", "chatnode.main", "--id", str(node_id),
                    "--cluster", spec, "--data-dir", f"{tmp}/node-{node_id}",
                    "--metrics-listen", metrics, "--log-level", "WARNING", *extra_args,
                ]  # fmt: skip
                with Path(tmp, f"node-{node_id}.log").open("wb") as log:
                    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
                nodes.append(LocalNode(node_id, address, f"http://{metrics}/metrics", proc))
            yield nodes
        finally:
            for node in nodes:
                node.proc.kill()
                node.proc.wait(timeout=10)


async def find_leader(addresses: Sequence[str], timeout_s: float = READY_TIMEOUT_S) -> str:
    """Poll members until one says it leads; return its address."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for address in addresses:
            async with grpc.aio.insecure_channel(address) as channel:
                stub = chat_pb2_grpc.ChatServiceStub(channel)
                with contextlib.suppress(grpc.aio.AioRpcError):
                    status = await stub.GetClusterStatus(pb.GetClusterStatusRequest(), timeout=0.5)
                    if status.role == "leader":
                        return address
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no leader among {list(addresses)} within {timeout_s:.0f}s")


async def _session(stub: chat_pb2_grpc.ChatServiceStub, name: str) -> tuple[tuple[str, str]]:
    with contextlib.suppress(grpc.aio.AioRpcError):
        await stub.CreateAccount(pb.CreateAccountRequest(username=name, password=PASSWORD))
    login = await stub.Login(pb.LoginRequest(username=name, password=PASSWORD))
    return (("authorization", f"Bearer {login.session_token}"),)


def read_fsyncs(metrics_url: str) -> float:
    """The leader's durable-transaction counter from its Prometheus endpoint."""
    with urllib.request.urlopen(metrics_url, timeout=5) as reply:  # loopback only
        text = reply.read().decode()
    match = re.search(r"^chat_log_fsyncs_total ([0-9.e+]+)$", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no chat_log_fsyncs_total at {metrics_url}")
    return float(match.group(1))


async def send_load(leader: str, clients: int, messages: int) -> tuple[float, list[float]]:
    """`clients` concurrent senders, one channel each, `messages` in all; (seconds, latencies)."""
    channels = [grpc.aio.insecure_channel(leader) for _ in range(clients)]
    stubs = [chat_pb2_grpc.ChatServiceStub(c) for c in channels]
    auths = [await _session(stub, f"bench{i}") for i, stub in enumerate(stubs)]
    await _session(stubs[0], "benchsink")
    latencies: list[float] = []
    per_client = max(1, messages // clients)

    async def sender(stub: chat_pb2_grpc.ChatServiceStub, auth: tuple[tuple[str, str]]) -> None:
        request = pb.SendMessageRequest(recipient="benchsink", body="x" * 100)
        for _ in range(per_client):
            started = time.perf_counter()
            await stub.SendMessage(request, metadata=auth, timeout=10)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(sender(s, a) for s, a in zip(stubs, auths, strict=True)))
    elapsed = time.perf_counter() - started
    for channel in channels:
        await channel.close()
    return elapsed, latencies


async def measure(leader: str, clients: int, messages: int, metrics_url: str | None) -> LoadResult:
    fsyncs_before = read_fsyncs(metrics_url) if metrics_url else None
    elapsed, latencies = await send_load(leader, clients, messages)
    fsyncs = None
    if metrics_url and fsyncs_before is not None:
        fsyncs = (read_fsyncs(metrics_url) - fsyncs_before) * 1000 / len(latencies)
    latencies.sort()
    return LoadResult(
        clients=clients,
        messages=len(latencies),
        seconds=round(elapsed, 3),
        per_second=round(len(latencies) / elapsed, 1),
        p50_ms=round(percentile(latencies, 0.50) * 1000, 3),
        p99_ms=round(percentile(latencies, 0.99) * 1000, 3),
        fsyncs_per_1000=None if fsyncs is None else round(fsyncs, 1),
    )


async def run_bench(
    addresses: Sequence[str], clients: Sequence[int], messages: int, metrics: dict[str, str]
) -> list[LoadResult]:
    leader = await find_leader(addresses)
    await send_load(leader, 4, 200)  # warm up connections and the page cache
    return [await measure(leader, c, messages, metrics.get(leader)) for c in clients]


def render(results: Sequence[LoadResult]) -> str:
    lines = [
        f"{'clients':>7}  {'msgs':>6}  {'msg/s':>8}  {'p50 ms':>7}  {'p99 ms':>7}  fsyncs/1000"
    ]
    for r in results:
        fsyncs = "-" if r.fsyncs_per_1000 is None else f"{r.fsyncs_per_1000:.1f}"
        lines.append(
            f"{r.clients:>7}  {r.messages:>6}  {r.per_second:>8.1f}  {r.p50_ms:>7.2f}  "
            f"{r.p99_ms:>7.2f}  {fsyncs}"
        )
    return "\n".join(lines)


def as_dicts(results: Sequence[LoadResult]) -> list[dict[str, object]]:
    return [asdict(r) for r in results]
