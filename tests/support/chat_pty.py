"""``chat`` in a pty beside a local cluster of real node processes.

The pty is forked before this process makes any gRPC call: forking while
gRPC's threads run (gRPC then skips its fork handlers) can break the child
before it execs, so the program dies before drawing anything.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from chatnode.local_cluster import Cluster, free_port
from client.sync import SyncChatClient
from tests.support.nodes import PASSWORD
from tests.support.terminal import ROWS, Terminal


@contextmanager
def chat_beside_cluster(
    tmp_path: Path,
    size: int,
    chat_args: Sequence[str] = (),
    *,
    start: bool = True,
    rows: int = ROWS,
) -> Iterator[tuple[Cluster, Terminal]]:
    """chat --cluster (the cluster's members) chat_args in a pty, then (with start) the
    nodes, up once one leads; everything is killed afterwards."""
    cluster = Cluster.plan(tmp_path, {i: f"127.0.0.1:{free_port()}" for i in range(1, size + 1)})
    terminal = Terminal(["-m", "client.app", "--cluster", cluster.spec, *chat_args], rows=rows)
    try:
        if start:
            start_all(cluster)
        yield cluster, terminal
    finally:
        terminal.kill()
        cluster.stop_all()


@contextmanager
def alice_beside_bob(
    tmp_path: Path, chat_args: Sequence[str] = (), *, size: int = 1, rows: int = ROWS
) -> Iterator[tuple[Cluster, Terminal, SyncChatClient]]:
    """chat_beside_cluster, with bob created and logged in through the library, and chat
    signed up as alice."""
    with (
        chat_beside_cluster(tmp_path, size, chat_args, rows=rows) as (cluster, terminal),
        SyncChatClient(cluster.addresses) as bob,
    ):
        bob.create_account("bob", PASSWORD)
        bob.login("bob", PASSWORD)
        terminal.sign_up("alice", PASSWORD)
        yield cluster, terminal, bob


def start_all(cluster: Cluster) -> None:
    """Start every node and wait (bounded) until one leads."""
    for node in cluster.nodes.values():
        node.start()
    cluster.wait_for_leader()
