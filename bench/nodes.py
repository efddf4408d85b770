"""The nodes the bench acts on: its own (chatnode.local_cluster) or an operator's.

Failover needs to signal and restart nodes: the bench's own processes, or a
cluster it did not start through ``--node-control``. Memory figures need the
processes themselves (/proc), so that part runs only on the bench's own.
"""

from __future__ import annotations

import asyncio
import shlex
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc

from client.admin import ClusterAdmin, reference_view
from proto.addresses import client_address

LEASE_MS = 1000  # the product's defaults, passed explicitly so the report can state them
HEARTBEAT_MS = 100
# The bench's own nodes: the product's timing, stated in the report, and quiet logs.
NODE_ARGS = (
    "--log-level", "WARNING", "--lease-ms", str(LEASE_MS), "--heartbeat-ms", str(HEARTBEAT_MS),
)  # fmt: skip
HEALTHY_TIMEOUT_S = 60.0
CONTROL_TIMEOUT_S = 60.0


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
    """The members --cluster names, at the listeners the bench's chat calls go to."""
    command = tuple(shlex.split(control))
    return [RemoteNode(i, client_address(address), command) for i, address in members.items()]


async def wait_until_healthy(
    nodes: Sequence[Controllable],
    credentials: grpc.ChannelCredentials | None = None,
    timeout_s: float = HEALTHY_TIMEOUT_S,
) -> int:
    """Wait for a leader whose ISR holds every node; return the leader's id.

    Failover runs start from this state only, so each run measures the same thing.
    """
    admin = ClusterAdmin([n.address for n in nodes], credentials=credentials)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        view = reference_view(await admin.views(admin.addresses))
        if view is not None and view.role == "leader":
            in_sync = {m.id for m in view.members if m.in_sync}
            if in_sync >= {n.node_id for n in nodes}:
                return view.node_id
        await asyncio.sleep(0.05)
    raise TimeoutError(f"the cluster did not get all nodes in sync within {timeout_s:g}s")
