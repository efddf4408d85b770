"""``chatctl backup`` and ``chatctl restore`` against real nodes (docs/design.md, "Backup and
restore").

The walkthrough an operator follows after losing every replica's disk: back up
a busy leader, restore the copy as the only member of a new cluster, check
that it serves everything the copy holds, then grow it back with add-member
and ``--join``. Then the refusals: each is exit 1, one line, nothing changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest

from chatnode.local_cluster import Cluster, NodeProcess, free_port, local_cluster
from chatnode.state import ChatReader, ChatState
from client.backup import STATE_TABLES, check_backup
from coord.core.config import ClusterConfig, config_entry
from coord.core.log import HardState
from coord.shell.log_store import LogStore
from proto import chat_pb2 as pb
from proto.credentials import write_new_secret
from tests.support.faults import (
    NODE_ARGS,
    WAIT_S,
    Load,
    Members,
    Metadata,
    assert_replicas_agree,
    deadline_loop,
    log_in,
    running_cluster,
    served_inbox,
    sign_up,
    wait_caught_up,
    wait_in_sync,
)

pytestmark = pytest.mark.timeout(120)

CTL_TIMEOUT_S = 30.0
ACKS = 30  # acknowledged sends before the backup starts
JOIN_WAIT_S = 15.0  # a snapshot of a few pages takes well under a second


async def chatctl(*args: str) -> tuple[int, str, str]:
    """Run chatctl as its own process without blocking the event loop (the load keeps
    sending meanwhile); its exit status, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "client.chatctl",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(CTL_TIMEOUT_S):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def ctl_ok(*args: str) -> str:
    code, out, err = await chatctl(*args)
    assert code == 0 and err == "", (code, out, err)
    return out


def ctl_fails(*args: str, code: int = 1) -> str:
    """Run a verb that must fail with `code` and one line on stderr; that line."""
    result = subprocess.run(
        [sys.executable, "-m", "client.chatctl", *args],
        capture_output=True,
        text=True,
        timeout=CTL_TIMEOUT_S,
    )
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def inbox(path: Path, name: str) -> list[tuple[int, str]]:
    """(id, body) of the messages to `name` in a chat state file (a node's or a backup)."""
    with ChatReader(path) as reader:
        return [(m.id, m.body) for m in reader.messages_after(name, 0, 1_000_000)]


def state_rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every chat state table, in a fixed order: two replicas agree on all."""
    uri = path.resolve().as_uri() + "?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as db:
        return {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall()) for t in STATE_TABLES}


@contextlib.asynccontextmanager
async def restored_cluster(tmp_path: Path, data_dir: Path, address: str) -> AsyncIterator[Cluster]:
    """Node 1 on the restored data dir, alone in its cluster, as `chatctl restore` says to
    start it; killed afterwards with any node added to the cluster meanwhile."""
    cluster = Cluster(tmp_path / "restored.secret")
    write_new_secret(cluster.secret_file)
    args = ["--id", "1", "--cluster", f"1={address}", "--data-dir", str(data_dir)]
    args += ["--min-insync", "1", *cluster.secret_args, *NODE_ARGS]
    cluster.nodes[1] = NodeProcess(1, address, data_dir, args, tmp_path / "restored-1.log")
    try:
        cluster.nodes[1].start()
        yield cluster
    except BaseException as exc:
        exc.add_note(cluster.log_tails())
        raise
    finally:
        cluster.stop_all()


# -- the walkthrough -------------------------------------------------------------------------


async def test_backup_of_a_busy_leader_restores_into_a_single_member_cluster(
    tmp_path: Path,
) -> None:
    backup_file = tmp_path / "chat-backup.db"
    bob = await back_up_a_busy_leader(tmp_path, backup_file)
    async with restored_from(tmp_path, backup_file) as cluster:
        members = Members(cluster)
        try:
            await serves_the_backup(members, backup_file, bob)
        finally:
            await members.close()


async def test_a_member_added_to_a_restored_cluster_catches_up_by_snapshot(
    tmp_path: Path,
) -> None:
    backup_file = tmp_path / "chat-backup.db"
    old = tmp_path / "old"
    old.mkdir()
    with local_cluster(old, size=1, extra_args=NODE_ARGS) as cluster:
        members = Members(cluster)
        try:
            alice = await sign_up(members, "alice")
            bob = await sign_up(members, "bob")
            for n in range(5):
                request = pb.SendMessageRequest(recipient="bob", body=f"m{n}")
                await members.call("SendMessage", request, alice)
        finally:
            await members.close()
        await ctl_ok("backup", "--data-dir", str(cluster.nodes[1].data_dir), str(backup_file))
    # One node alone is in quorum mode; the regrown cluster is to run in fail-stop mode.
    async with restored_from(tmp_path, backup_file, "--mode", "fail-stop") as cluster:
        await grows_back_by_join(cluster, tmp_path, bob)


@contextlib.asynccontextmanager
async def restored_from(
    tmp_path: Path, backup_file: Path, *flags: str, mode: str = "fail-stop"
) -> AsyncIterator[Cluster]:
    """chatctl restore into a fresh dir, then node 1 started on it as the restore says."""
    address = f"127.0.0.1:{free_port()}"
    data_dir = tmp_path / "restored" / "node-1"
    restore = ("--data-dir", str(data_dir), "--id", "1", "--address", address, *flags)
    out = await ctl_ok("restore", str(backup_file), *restore)
    assert f"alone in a new {mode} cluster" in out and f"--cluster 1={address}" in out, out
    async with restored_cluster(tmp_path, data_dir, address) as cluster:
        yield cluster


async def back_up_a_busy_leader(tmp_path: Path, backup_file: Path) -> Metadata:
    """(a) Back up the leader of three while writers keep sending: the copy is whole and
    holds every message acknowledged before the backup started. Bob's session, for later."""
    old = tmp_path / "old"
    old.mkdir()
    async with running_cluster(old, NODE_ARGS) as (cluster, members):
        alice = await sign_up(members, "alice")
        bob = await sign_up(members, "bob")
        load = Load(members, alice, "bob", writers=2).start()
        await load.run_phase("before", ACKS)
        acked_before = dict(load.acked)
        leader = await members.find_leader()
        load.phase = "during"
        out = await ctl_ok(
            "backup", "--data-dir", str(cluster.nodes[leader].data_dir), str(backup_file)
        )
        during = load.count("during")
        await load.stop()
    assert during > 0, "the node took no write while the backup ran"
    info = check_backup(backup_file)  # integrity_check, the schema, the counts
    assert out.count("\n") == 1 and str(backup_file) in out, out
    assert f"applied index {info.applied_index} " in out
    assert f"{info.accounts} accounts, {info.messages} messages" in out
    stored = {body: message_id for message_id, body in inbox(backup_file, "bob")}
    lost = {body for body, message_id in acked_before.items() if stored.get(body) != message_id}
    assert not lost, f"{len(lost)} sends acknowledged before the backup are not in it"
    assert set(stored) <= set(load.acked), "the backup holds messages nobody sent"
    assert info.applied_index >= max(acked_before.values())
    assert not backup_file.with_name(backup_file.name + ".partial").exists()
    return bob


async def serves_the_backup(members: Members, backup_file: Path, bob: Metadata) -> None:
    """(b) The restored node leads alone and serves the backup: every message to bob, read
    with bob's old session after a login with his old password; then new writes commit."""
    leader = await members.find_leader()
    status = await members.status(leader)
    assert status is not None and [m.id for m in status.members] == [1]
    assert status.mode == "fail-stop"
    served = await served_inbox(members, "bob", bob)
    assert [(m.id, m.body) for m in served] == inbox(backup_file, "bob")
    alice = await log_in(members, "alice")
    reply = await members.call(
        "SendMessage", pb.SendMessageRequest(recipient="bob", body="after the restore"), alice
    )
    assert reply.message_id > check_backup(backup_file).applied_index


async def grows_back_by_join(cluster: Cluster, tmp_path: Path, bob: Metadata) -> None:
    """(c) add-member 2, node 2 started empty with --join: it catches up by snapshot and its
    state equals the leader's."""
    address = f"127.0.0.1:{free_port()}"
    secret = ["--cluster-secret-file", str(cluster.secret_file)]
    await ctl_ok("--cluster", cluster.spec, *secret, "add-member", "2", address)
    data_dir = tmp_path / "restored" / "node-2"
    args = ["--id", "2", "--cluster", f"{cluster.spec},2={address}", "--data-dir", str(data_dir)]
    args += ["--join", *cluster.secret_args, *NODE_ARGS]
    cluster.nodes[2] = NodeProcess(2, address, data_dir, args, tmp_path / "restored-2.log")
    cluster.nodes[2].start()
    members = Members(cluster)
    try:
        await wait_in_sync(members, 2, JOIN_WAIT_S)
        assert "installed snapshot at index" in cluster.nodes[2].log_text()
        served = await served_inbox(members, "bob", bob)
        await wait_caught_up(members)
        await assert_replicas_agree(members, "bob", served)
        states = [cluster.nodes[i].data_dir / "state.db" for i in (1, 2)]
        async for _ in deadline_loop(WAIT_S, "node 2's state equals node 1's"):
            if state_rows(states[0]) == state_rows(states[1]):
                break
    finally:
        await members.close()


# -- refusals ----------------------------------------------------------------------------------


def stopped_node_dir(path: Path) -> Path:
    """A node's data dir with one applied entry (its first config), as a node leaves it."""
    path.mkdir()
    config = ClusterConfig.create({1: "127.0.0.1:7001"})
    store = LogStore(path / "log.db")
    store.save(HardState(1), None, [config_entry(1, 1, config)])
    store.close()
    with ChatState(path / "state.db") as state:
        state.apply([(1, None)])
    return path


def listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_refusals_are_one_line_and_change_nothing(tmp_path: Path) -> None:
    """(d) An existing target, a missing data dir, a non-empty restore dir and a truncated
    backup: exit 1, one line, every file as it was."""
    node_dir = stopped_node_dir(tmp_path / "node-1")
    backups = tmp_path / "backups"
    backups.mkdir()
    good = backups / "good.db"
    subprocess.run(
        [sys.executable, "-m", "client.chatctl", "backup", "--data-dir", str(node_dir), str(good)],
        check=True,
        capture_output=True,
        timeout=CTL_TIMEOUT_S,
    )
    assert check_backup(good).applied_index == 1
    truncated = backups / "truncated.db"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "log.db").write_bytes(b"an old node's log")
    before = listing(backups), listing(node_dir), listing(occupied)

    line = ctl_fails("backup", "--data-dir", str(node_dir), str(good))
    assert "exists" in line, line
    line = ctl_fails("backup", "--data-dir", str(tmp_path / "gone"), str(backups / "new.db"))
    assert "state.db does not exist" in line, line
    restore = ("--id", "1", "--address", "127.0.0.1:7001")
    line = ctl_fails("restore", str(good), "--data-dir", str(occupied), *restore)
    assert "is not empty" in line, line
    fresh = tmp_path / "fresh"
    line = ctl_fails("restore", str(truncated), "--data-dir", str(fresh), *restore)
    assert str(truncated) in line, line
    ctl_fails("restore", str(good), "--data-dir", str(fresh), code=2)  # no --id: usage

    assert (listing(backups), listing(node_dir), listing(occupied)) == before
    assert not fresh.exists()
    assert set(os.listdir(backups)) == {"good.db", "truncated.db"}, "a partial copy was left"
