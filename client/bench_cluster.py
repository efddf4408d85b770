"""The bench's own local cluster: real ``chatnode`` processes it can kill, stop and restart.

Failover and memory figures need the processes themselves (signals, /proc),
which is why those parts run only on a cluster the bench started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from client.chatctl import cluster_views, reference_view
from proto.credentials import write_new_secret

LEASE_MS = 1000  # the product's defaults, passed explicitly so the report can state them
HEARTBEAT_MS = 100
HEALTHY_TIMEOUT_S = 60.0
CONTROL_TIMEOUT_S = 60.0


@dataclass
class LocalNode:
    node_id: int
    address: str
    metrics_url: str
    args: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        """Start (or restart, on the same data dir and port) the node's process."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def kill(self) -> None:
        """SIGKILL and reap (a stopped process dies too)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

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


class Controllable(Protocol):
    """A node the failover part can signal and restart: its own process, or a remote one."""

    node_id: int
    address: str

    def signal(self, signum: int) -> None: ...

    def start(self) -> None: ...


@dataclass(frozen=True)
class RemoteNode:
    """A node of a cluster the bench did not start, acted on by an operator's command.

    ``--node-control CMD`` runs ``CMD ID ACTION`` with ACTION a signal name (KILL,
    STOP, CONT) or ``start``; ``deploy/cluster.sh signal HOSTS_FILE`` is such a
    command (systemctl kill / start on the node's machine).
    """

    node_id: int
    address: str
    control: tuple[str, ...]

    def signal(self, signum: int) -> None:
        self._act(signal.Signals(signum).name.removeprefix("SIG"))

    def start(self) -> None:
        self._act("start")

    def _act(self, action: str) -> None:
        argv = [*self.control, str(self.node_id), action]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=CONTROL_TIMEOUT_S)
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            raise RuntimeError(f"{shlex.join(argv)} failed: {why}")


def remote_nodes(members: dict[int, str], control: str) -> list[RemoteNode]:
    return [RemoteNode(i, address, tuple(shlex.split(control))) for i, address in members.items()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_args(node_id: int, spec: str, data_dir: str, metrics: str) -> list[str]:
    return [
        sys.executable, "-m", "chatnode.main", "--id", str(node_id), "--cluster", spec,
        "--data-dir", data_dir, "--metrics-listen", metrics, "--log-level", "WARNING",
        "--lease-ms", str(LEASE_MS), "--heartbeat-ms", str(HEARTBEAT_MS),
    ]  # fmt: skip


@contextlib.contextmanager
def local_cluster(size: int, extra_args: Sequence[str] = ()) -> Iterator[list[LocalNode]]:
    """Start `size` chatnode processes on loopback in a temp dir; kill them on exit.

    SQLite runs as the product ships it (``synchronous=FULL``): every figure
    includes real fsyncs of the temp dir's file system.
    """
    with tempfile.TemporaryDirectory(prefix="chat-bench-") as tmp:
        addresses = {i: f"127.0.0.1:{free_port()}" for i in range(1, size + 1)}
        spec = ",".join(f"{i}={a}" for i, a in addresses.items())
        secret = Path(tmp, "cluster.secret")
        write_new_secret(secret)
        nodes = []
        try:
            for node_id, address in addresses.items():
                metrics = f"127.0.0.1:{free_port()}"
                args = node_args(node_id, spec, f"{tmp}/node-{node_id}", metrics)
                log_path = Path(tmp, f"node-{node_id}.log")
                node = LocalNode(node_id, address, f"http://{metrics}/metrics", args, log_path)
                node.args += ["--cluster-secret-file", str(secret), *extra_args]
                node.start()
                nodes.append(node)
            yield nodes
        finally:
            for node in nodes:
                node.kill()


async def wait_until_healthy(
    nodes: Sequence[Controllable], timeout_s: float = HEALTHY_TIMEOUT_S
) -> int:
    """Wait for a leader whose ISR holds every node; return the leader's id.

    Failover runs start from this state only, so each run measures the same thing.
    """
    addresses = [n.address for n in nodes]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        view = reference_view(await cluster_views(addresses))
        if view is not None and view.role == "leader":
            in_sync = {m.id for m in view.members if m.in_sync}
            if in_sync >= {n.node_id for n in nodes}:
                return view.node_id
        await asyncio.sleep(0.05)
    raise TimeoutError(f"the cluster did not get all nodes in sync within {timeout_s:g}s")
