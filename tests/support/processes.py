"""Real chatnode processes for tests: free loopback ports, bounded waits, killed on exit."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from prometheus_client.parser import text_string_to_metric_families

from client.bench_cluster import free_port
from proto import chat_pb2 as pb
from proto import chat_pb2_grpc, replication_pb2_grpc
from proto.credentials import ADMIN_ROLE, ClusterSecret, write_new_secret

START_TIMEOUT_S = 20.0
WAIT_S = 30.0


def wait_until(check: Callable[[], bool], what: str, limit_s: float = WAIT_S) -> None:
    """Poll check until it holds; fail naming what never happened. For conditions no
    event announces (a peer's status, a file on disk)."""
    deadline = time.monotonic() + limit_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting until {what}")
        time.sleep(0.05)


@dataclass
class NodeProcess:
    node_id: int
    address: str
    data_dir: Path
    args: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    metrics_address: str = ""

    def metric_samples(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """The samples of one metric this node serves (needs ``metrics=True``), by labels."""
        with urllib.request.urlopen(f"http://{self.metrics_address}/metrics", timeout=5) as page:
            text = page.read().decode()
        return {
            tuple(sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name
        }

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chatnode.main", *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL and reap: the process gets no chance to flush or hand over anything."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    @property
    def running(self) -> bool:
        """Started and not yet exited (a SIGSTOPped process still counts as running)."""
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Cluster:
    secret_file: Path
    nodes: dict[int, NodeProcess] = field(default_factory=dict)

    @property
    def secret_args(self) -> list[str]:
        """The flag every member of this cluster runs with."""
        return ["--cluster-secret-file", str(self.secret_file)]

    def admin(self, node_id: int, method: str, request: object, timeout: float = 10.0) -> Any:
        """One Admin call to node_id with the operator's credentials."""
        metadata = ClusterSecret.load(self.secret_file).metadata(ADMIN_ROLE)
        with grpc.insecure_channel(self.nodes[node_id].address) as channel:
            rpc = getattr(replication_pb2_grpc.AdminStub(channel), method)
            return rpc(request, timeout=timeout, metadata=metadata)

    @property
    def spec(self) -> str:
        return ",".join(f"{n.node_id}={n.address}" for n in self.nodes.values())

    @property
    def addresses(self) -> list[str]:
        return [n.address for n in self.nodes.values()]

    def status(self, node_id: int, timeout: float = 1.0) -> pb.ClusterStatus | None:
        with grpc.insecure_channel(self.nodes[node_id].address) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            try:
                return stub.GetClusterStatus(pb.GetClusterStatusRequest(), timeout=timeout)
            except grpc.RpcError:
                return None

    def wait_for_leader(self, timeout: float = START_TIMEOUT_S) -> int:
        """Block until some live node reports itself leader; return its id."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node_id, node in self.nodes.items():
                if node.proc is None or node.proc.poll() is not None:
                    continue
                status = self.status(node_id)
                if status is not None and status.role == "leader":
                    return node_id
            time.sleep(0.05)
        logs = "\n".join(n.log_text()[-2000:] for n in self.nodes.values())
        raise TimeoutError(f"no leader within {timeout}s; logs:\n{logs}")

    def stop_all(self) -> None:
        for node in self.nodes.values():
            node.kill()

    def log_tails(self, lines: int = 40) -> str:
        """The end of every node's log, for a failure message."""
        return "\n".join(
            f"--- node-{i}.log ---\n" + "\n".join(n.log_text().splitlines()[-lines:])
            for i, n in self.nodes.items()
        )


@contextmanager
def local_cluster(
    tmp_path: Path,
    size: int = 1,
    extra_args: tuple[str, ...] = (),
    data_roots: Mapping[int, Path] | None = None,
    metrics: bool = False,
) -> Iterator[Cluster]:
    """Start `size` nodes on free loopback ports with a fresh cluster secret; always kill
    them afterwards. Logs and the secret go in tmp_path, node N's data dir in
    data_roots[N] (default tmp_path); with `metrics`, each node serves Prometheus
    metrics on a port of its own."""
    cluster = Cluster(tmp_path / "cluster.secret")
    write_new_secret(cluster.secret_file)
    members = {i: f"127.0.0.1:{free_port()}" for i in range(1, size + 1)}
    spec = ",".join(f"{i}={a}" for i, a in members.items())
    for node_id, address in members.items():
        data_dir = (data_roots or {}).get(node_id, tmp_path) / f"node-{node_id}"
        args = ["--id", str(node_id), "--cluster", spec, "--data-dir", str(data_dir)]
        args += [*cluster.secret_args, *extra_args]
        metrics_address = f"127.0.0.1:{free_port()}" if metrics else ""
        if metrics:
            args += ["--metrics-listen", metrics_address]
        cluster.nodes[node_id] = NodeProcess(
            node_id,
            address,
            data_dir,
            args,
            tmp_path / f"node-{node_id}.log",
            None,
            metrics_address,
        )
    try:
        for node in cluster.nodes.values():
            node.start()
        cluster.wait_for_leader()
        yield cluster
    finally:
        cluster.stop_all()
