"""A full disk on one node: it stops acknowledging, says why, and recovers once space returns.

Real processes; the node under test keeps its data on a small tmpfs (needs
root, skipped otherwise) that the test fills with a junk file while writes
run, then empties. Whether the full node is a follower or the leader, every
write the cluster acknowledged is kept exactly once, the node reports the
fault in ``GetClusterStatus`` meanwhile, and it catches up afterwards without
a restart (coord/shell/disk.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatnode.local_cluster import local_cluster
from proto import chat_pb2 as pb
from proto import replication_pb2 as rpb
from tests.support.faults import (
    NODE_ARGS,
    WAIT_S,
    Members,
    deadline_loop,
    fresh_request_id,
    served_inbox,
    sign_up,
    wait_caught_up,
)

BODY_BYTES = 20_000  # big enough that a full disk is hit within a few dozen writes
DISK = "16m"


@contextlib.contextmanager
def small_disk(folder: Path, size: str = DISK) -> Iterator[Path]:
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    """Write a junk file until the file system is full; the file, to delete later."""
    junk = folder / "junk"
    with junk.open("wb", buffering=0) as out:
        try:
            while out.write(b"\0" * 4096):
                pass
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return junk


class Writer:
    """Sends messages one after another through the leader; remembers what was acknowledged."""

    def __init__(self, members: Members, auth: tuple[tuple[str, str], ...]) -> None:
        self.members, self.auth = members, auth
        self.acked: dict[str, int] = {}  # body prefix (request id) -> message id

    async def send(self, count: int) -> None:
        for _ in range(count):
            request_id = fresh_request_id("w")
            body = request_id + "/" + "x" * BODY_BYTES
            request = pb.SendMessageRequest(recipient="sink", body=body, request_id=request_id)
            reply = await self.members.call("SendMessage", request, self.auth)
            self.acked[request_id] = reply.message_id

    async def send_until(self, done: asyncio.Event) -> None:
        while not done.is_set():
            await self.send(1)


async def fault_of(members: Members, node_id: int) -> str:
    status = await members.status(node_id)
    return status.fault if status is not None else ""


async def check_everything_kept(members: Members, writer: Writer) -> None:
    await wait_caught_up(members)
    stored = await served_inbox(members, "sink", writer.auth)
    by_request = {m.body.split("/", 1)[0]: m.id for m in stored}
    assert len(by_request) == len(stored), "a message is stored twice"
    assert {r: by_request.get(r) for r in writer.acked} == writer.acked


@pytest.mark.parametrize("victim_role", ["follower", "leader"])
async def test_a_full_disk_stops_a_node_acking_and_it_recovers(
    tmp_path: Path, victim_role: str
) -> None:
    victim = 3
    with (
        small_disk(tmp_path / "disk") as disk,
        local_cluster(tmp_path, size=3, extra_args=NODE_ARGS, data_roots={victim: disk}) as cluster,
    ):
        members = Members(cluster)
        try:
            leader = await members.find_leader()
            wanted = victim if victim_role == "leader" else 1
            if leader != wanted:
                cluster.admin(leader, "TransferLeader", rpb.TransferLeaderRequest(id=wanted))
                async for _ in deadline_loop(WAIT_S, f"node {wanted} leads"):
                    if await members.find_leader() == wanted:
                        break
            auth = await sign_up(members, "sink")
            writer = Writer(members, auth)
            await writer.send(10)
            junk = await asyncio.to_thread(fill, disk)
            done = asyncio.Event()
            writing = asyncio.create_task(writer.send_until(done))
            async for _ in deadline_loop(WAIT_S, f"node {victim} reports its full disk"):
                if "full" in await fault_of(members, victim):
                    break
            acked_while_full = len(writer.acked)
            async for _ in deadline_loop(WAIT_S, "writes go on without the full node"):
                if len(writer.acked) >= acked_while_full + 10:
                    break
            done.set()
            async with asyncio.timeout(WAIT_S):
                await writing
            junk.unlink()
            async for _ in deadline_loop(WAIT_S, f"node {victim} writes again"):
                if await fault_of(members, victim) == "":
                    break
            await writer.send(10)
            assert all(node.running for node in cluster.nodes.values())
            await check_everything_kept(members, writer)
        except BaseException as exc:
            exc.add_note(cluster.log_tails())
            raise
        finally:
            await members.close()
