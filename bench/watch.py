"""Watching the bench's own nodes from outside, for the parts that kill and restart them.

The nodes announce none of the moments these parts time (a follower left the
ISR, the leader compacted its log, a snapshot was installed), so the parts
poll for them: the leader's view over the API, the nodes' SQLite files read
only, a node's own log. catchup and recovery share them; both also name a node
that died on its own, since the calls that failed because of it only say a
connection broke.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import signal
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import TypeVar

import grpc

from chatnode.local_cluster import NodeProcess
from client.admin import ClusterAdmin, reference_view
from client.status import ClusterStatus

POLL_S = 0.05
OUT_OF_SYNC_TIMEOUT_S = 30.0  # a killed follower leaves the ISR after about one lease
EXIT_TIMEOUT_S = 10.0
# The state's size as of its last commit, its WAL included: the file alone lags until the
# next checkpoint.
STATE_BYTES = "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
INSTALLED = re.compile(r"installed snapshot at index (\d+)")

T = TypeVar("T")


def progress(part: str, text: str) -> None:
    """A line on stderr while a long part runs, so the wait has a reason."""
    print(f"bench: {part}: {text}", file=sys.stderr, flush=True)


def sqlite_value(path: Path, query: str) -> int:
    """One integer from a node's database, read-only: the node may be running."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
        return db.execute(query).fetchone()[0]


def state_bytes(node: NodeProcess) -> int:
    return sqlite_value(node.data_dir / "state.db", STATE_BYTES)


def first_log_index(node: NodeProcess) -> int:
    return sqlite_value(node.data_dir / "log.db", "SELECT coalesce(min(idx), 0) FROM log")


def last_log_index(node: NodeProcess) -> int:
    return sqlite_value(node.data_dir / "log.db", "SELECT coalesce(max(idx), 0) FROM log")


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def start_with(node: NodeProcess, *args: str) -> float:
    """Start the node with these flags added for this start only; when it started
    (monotonic)."""
    usual = node.args
    node.args = [*usual, *args]
    started = time.monotonic()
    try:
        node.start()
    finally:
        node.args = usual
    return started


def installed_indexes(node: NodeProcess, offset: int) -> list[int]:
    """The index of each snapshot the node's log says it installed, past offset (it logs
    that at INFO)."""
    with node.log_path.open("rb") as log:
        log.seek(offset)
        return [int(m) for m in INSTALLED.findall(log.read().decode(errors="replace"))]


async def leader_view(admin: ClusterAdmin) -> ClusterStatus | None:
    """The leader's view of the cluster; None while no node answers as leader within a
    second (an election, or a leader held up copying a large state)."""
    view = reference_view(await admin.views(admin.addresses))
    return view if view is not None and view.role == "leader" else None


def in_sync(view: ClusterStatus | None, node_id: int) -> bool | None:
    """Whether the leader's view counts node_id in sync; None without a view."""
    if view is None:
        return None
    return any(m.id == node_id and m.in_sync for m in view.members)


async def until(
    what: str,
    timeout_s: float,
    check: Callable[[], bool | Awaitable[bool]],
    poll_s: float = POLL_S * 4,
) -> None:
    """Poll check() every poll_s until it holds. RuntimeError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        await asyncio.sleep(poll_s)
    raise RuntimeError(f"{what}: not within {timeout_s:g} s")


async def until_leader(admin: ClusterAdmin) -> ClusterStatus:
    """The leader's view, once a leader answers."""
    view: ClusterStatus | None = None

    async def found() -> bool:
        nonlocal view
        view = await leader_view(admin)
        return view is not None

    await until("a leader answers", OUT_OF_SYNC_TIMEOUT_S, found)
    assert view is not None
    return view


async def kill_out_of_sync(admin: ClusterAdmin, node: NodeProcess) -> None:
    """kill -9 the follower, then wait until the leader no longer counts it in sync: a
    restart before that would find it still in the ISR and time nothing."""
    node.signal(signal.SIGKILL)
    node.wait(timeout=EXIT_TIMEOUT_S)

    async def left() -> bool:
        return in_sync(await leader_view(admin), node.node_id) is False

    await until(f"the killed node {node.node_id} leaves the ISR", OUT_OF_SYNC_TIMEOUT_S, left)


async def naming_the_dead(part: str, nodes: Sequence[NodeProcess], work: Awaitable[T]) -> T:
    """The part's result; if it fails and a node exited on its own meanwhile, the error
    says which and why."""
    try:
        return await work
    except (grpc.aio.AioRpcError, RuntimeError, TimeoutError) as exc:
        if dead := _died(nodes):
            raise RuntimeError(f"during the {part} part {dead}") from exc
        raise


def _died(nodes: Sequence[NodeProcess]) -> str:
    """Which nodes exited on their own (not by a part's kill -9), and why, or ''."""
    dead = [n for n in nodes if n.proc is not None and n.proc.poll() not in (None, -signal.SIGKILL)]
    return "; ".join(
        f"node {n.node_id} exited: "
        + next(
            (line for line in reversed(n.log_text().splitlines()) if "fatal" in line),
            f"exit status {n.proc.returncode if n.proc else None}",
        )
        for n in dead
    )
