"""Real ``chatnode`` processes on one machine: for the tests, the bench and trying it out.

One place starts N nodes on loopback with a data folder and a cluster
secret, waits for a leader, and stops, kills, signals or restarts them. The
tests and ``chatctl bench`` use :func:`local_cluster` (free ports, killed on
exit); ``deploy/local-cluster.sh`` runs ``python -m chatnode.local_cluster
start|stop|spec|secret`` (ports 7001.., processes that outlive the command).

It lives with the server because it runs the server; the client may not
import it (it imports no client code either: its status calls are plain
``GetClusterStatus`` stubs), while tests and the bench may.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from prometheus_client.parser import text_string_to_metric_families

from proto import chat_pb2 as pb
from proto import chat_pb2_grpc, replication_pb2_grpc
from proto.addresses import client_address, peer_address
from proto.credentials import ADMIN_ROLE, ClusterSecret, write_new_secret

__all__ = ["Cluster", "NodeProcess", "free_port", "local_cluster"]

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
FIRST_PORT = 7001  # deploy/local-cluster.sh's nodes: 127.0.0.1:7001, :7002, ...


LOWEST_PORT = 10_000  # below: ports that well-known services may hold
_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on right now, and one that nothing is likely to take
    before a node binds it: below the kernel's ephemeral range, which every outgoing
    connection (this process's gRPC channels included) draws from, and never handed out
    twice by this process."""
    top = _ephemeral_range_start()
    for port in random.sample(range(LOWEST_PORT, top), top - LOWEST_PORT):
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise OSError(f"no free loopback port between {LOWEST_PORT} and {top}")


def _ephemeral_range_start(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> int:
    try:
        return max(LOWEST_PORT + 1, int(path.read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


@dataclass
class NodeProcess:
    """One node: its chatnode flags, log file and, once started, its process."""

    node_id: int
    address: str
    data_dir: Path
    args: list[str]  # chatnode's flags
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    metrics_address: str = ""
    env: dict[str, str] = field(default_factory=dict)  # added to this node's environment

    def start(self, detach: bool = False) -> None:
        """Start (or restart, on the same data dir and port) the node's process; with detach,
        in a session of its own that outlives this one."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "chatnode.main", *self.args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
                start_new_session=detach,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def metrics_url(self) -> str:
        return f"http://{self.metrics_address}/metrics"

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL and reap: the process gets no chance to flush or hand over anything."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT_S)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    @property
    def running(self) -> bool:
        """Started and not yet exited (a SIGSTOPped process still counts as running)."""
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metric_samples(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """The samples of one metric this node serves (needs ``metrics=True``), by labels."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as page:
            text = page.read().decode()
        return {
            tuple(sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name
        }

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the node's process so far (/proc/PID/stat)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self) -> int:
        """Resident set size from /proc/PID/status (VmRSS), the kernel's own figure."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for node {self.node_id} (pid {self.pid})")


@dataclass
class Cluster:
    """The nodes of one local cluster and the secret they share; credentials, when the nodes
    serve TLS, are how this module's own status and admin calls reach them."""

    secret_file: Path
    nodes: dict[int, NodeProcess] = field(default_factory=dict)
    credentials: grpc.ChannelCredentials | None = field(default=None, repr=False)

    @classmethod
    def plan(
        cls,
        root: Path,
        members: Mapping[int, str],
        extra_args: Sequence[str] = (),
        data_roots: Mapping[int, Path] | None = None,
        metrics: bool = False,
        node_args: Mapping[int, Sequence[str]] | None = None,
    ) -> Cluster:
        """The nodes (not started) for members: logs and the secret (made if missing) in
        root, node N's data dir in data_roots[N] (default root), node N's own flags (its
        certificate, say) node_args[N]; with metrics, each node serves Prometheus metrics on
        a free port."""
        cluster = cls(root / "cluster.secret")
        if not cluster.secret_file.exists():
            write_new_secret(cluster.secret_file)
        spec = ",".join(f"{i}={a}" for i, a in members.items())
        for node_id, address in members.items():
            data_dir = (data_roots or {}).get(node_id, root) / f"node-{node_id}"
            args = ["--id", str(node_id), "--cluster", spec, "--data-dir", str(data_dir)]
            args += [*cluster.secret_args, *extra_args, *(node_args or {}).get(node_id, ())]
            metrics_address = f"127.0.0.1:{free_port()}" if metrics else ""
            if metrics:
                args += ["--metrics-listen", metrics_address]
            log_path = root / f"node-{node_id}.log"
            node = NodeProcess(node_id, address, data_dir, args, log_path, None, metrics_address)
            cluster.nodes[node_id] = node
        return cluster

    @property
    def secret_args(self) -> list[str]:
        """The flag every member of this cluster runs with."""
        return ["--cluster-secret-file", str(self.secret_file)]

    @property
    def spec(self) -> str:
        return ",".join(f"{n.node_id}={n.address}" for n in self.nodes.values())

    @property
    def addresses(self) -> list[str]:
        """Where chat clients call the nodes."""
        return [client_address(n.address) for n in self.nodes.values()]

    def admin(self, node_id: int, method: str, request: object, timeout: float = 10.0) -> Any:
        """One Admin call to node_id with the operator's credentials."""
        metadata = ClusterSecret.load(self.secret_file).metadata(ADMIN_ROLE)
        with _channel(peer_address(self.nodes[node_id].address), self.credentials) as channel:
            rpc = getattr(replication_pb2_grpc.AdminStub(channel), method)
            return rpc(request, timeout=timeout, metadata=metadata)

    def status(self, node_id: int, timeout: float = 1.0) -> pb.ClusterStatus | None:
        return status_at(client_address(self.nodes[node_id].address), timeout, self.credentials)

    def wait_for_leader(self, timeout: float = START_TIMEOUT_S, live_only: bool = True) -> int:
        """Block until some node reports itself leader; return its id. Without live_only,
        nodes this process did not start (a detached cluster's) are asked too."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node_id, node in self.nodes.items():
                if live_only and not node.running:
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


def _channel(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.Channel:
    """A blocking channel to one node: TLS with credentials, plaintext without."""
    if credentials is None:
        return grpc.insecure_channel(address)
    return grpc.secure_channel(address, credentials)


def status_at(
    address: str, timeout: float = 1.0, credentials: grpc.ChannelCredentials | None = None
) -> pb.ClusterStatus | None:
    """The node's GetClusterStatus answer, or None when it does not answer in time."""
    with _channel(address, credentials) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        try:
            return stub.GetClusterStatus(pb.GetClusterStatusRequest(), timeout=timeout)
        except grpc.RpcError:
            return None


@contextmanager
def local_cluster(
    root: Path,
    size: int = 1,
    extra_args: Sequence[str] = (),
    data_roots: Mapping[int, Path] | None = None,
    metrics: bool = False,
    node_args: Mapping[int, Sequence[str]] | None = None,
    credentials: grpc.ChannelCredentials | None = None,
) -> Iterator[Cluster]:
    """Start `size` nodes on free loopback ports with a fresh cluster secret and wait for a
    leader; always kill them afterwards. See Cluster.plan for where files go and node_args;
    credentials are for nodes that serve TLS (node_args giving them certificates)."""
    members = {i: f"127.0.0.1:{free_port()}" for i in range(1, size + 1)}
    cluster = Cluster.plan(root, members, extra_args, data_roots, metrics, node_args)
    cluster.credentials = credentials
    try:
        for node in cluster.nodes.values():
            node.start()
        cluster.wait_for_leader()
        yield cluster
    finally:
        cluster.stop_all()


# -- python -m chatnode.local_cluster: deploy/local-cluster.sh's background cluster ----------


def _fixed_members(size: int) -> dict[int, str]:
    return {i: f"127.0.0.1:{FIRST_PORT + i - 1}" for i in range(1, size + 1)}


def _pid_file(home: Path, node_id: int) -> Path:
    return home / f"node-{node_id}.pid"


def _alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def start_detached(home: Path, size: int) -> int:
    """Start the nodes not running yet, each recorded in node-N.pid; wait for a leader."""
    home.mkdir(parents=True, exist_ok=True)
    cluster = Cluster.plan(home, _fixed_members(size))
    for node_id, node in cluster.nodes.items():
        if not _alive(_pid_file(home, node_id)):
            node.start(detach=True)
            _pid_file(home, node_id).write_text(f"{node.pid}\n")
    try:
        cluster.wait_for_leader(live_only=False)
    except TimeoutError:
        print(f"local-cluster: no leader after 20 s; see {home}/node-*.log", file=sys.stderr)
        return 1
    print(f"cluster {cluster.spec} is up; data and logs in {home}")
    return 0


def stop_detached(home: Path, size: int) -> int:
    """SIGTERM every recorded node, wait for each to exit (up to 10 s), forget its pid."""
    pid_files = [_pid_file(home, i) for i in range(1, size + 1)]
    for pid_file in pid_files:
        if _alive(pid_file):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
    for pid_file in pid_files:
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _alive(pid_file) and time.monotonic() < deadline:
            time.sleep(0.1)
        pid_file.unlink(missing_ok=True)
    print(f"cluster stopped; data kept in {home}")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m chatnode.local_cluster",
        description="A background cluster on 127.0.0.1:7001.. (deploy/local-cluster.sh).",
    )
    parser.add_argument("action", choices=("start", "stop", "spec", "secret"))
    parser.add_argument("--home", type=Path, required=True, help="data, logs, pids, secret")
    parser.add_argument("--nodes", type=int, default=3)
    args = parser.parse_args(argv)
    match args.action:
        case "start":
            sys.exit(start_detached(args.home, args.nodes))
        case "stop":
            sys.exit(stop_detached(args.home, args.nodes))
        case "spec":
            print(",".join(f"{i}={a}" for i, a in _fixed_members(args.nodes).items()))
        case "secret":
            print(args.home / "cluster.secret")


if __name__ == "__main__":
    main()
