"""``chatctl snapshot save`` and ``snapshot status`` against real nodes, and a restore of the
saved file (docs/design.md, "Backup and restore").

A save streams the leader's state over the Admin API, so it works from any
machine that reaches a member, with the operator's credentials. The round trip:
save (asked of a follower, which points to the leader), check the file, restore
it into a fresh cluster and find every account and message there. Then the
leader keeps taking writes while a save stream is held open mid-way, a second
save meanwhile is refused, and the refusals: no credentials, a damaged file.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import grpc
import pytest

from chatnode.local_cluster import Cluster
from client import snapshot_file
from proto import chat_pb2 as pb
from proto import replication_pb2 as rpb
from proto import replication_pb2_grpc
from proto.credentials import ADMIN_ROLE, ClusterSecret
from tests.cluster.test_backup import (
    chatctl,
    ctl_fails,
    ctl_ok,
    restored_from,
    state_rows,
)
from tests.support.faults import (
    NODE_ARGS,
    WAIT_S,
    Members,
    Metadata,
    deadline_loop,
    log_in,
    running_cluster,
    served_inbox,
    sign_up,
    wait_caught_up,
)

pytestmark = pytest.mark.timeout(120)

SENDS = 20
BIG_BODY = "x" * 60_000  # 40 of them make a state of several 1 MiB chunks
BIG_SENDS = 40
USER_TABLES = ("accounts", "messages")
# A client that stops reading holds the leader's stream mid-way only once its receive
# window is full: keep that window at HTTP/2's initial 64 KiB instead of letting gRPC
# grow it to megabytes.
NO_WINDOW_GROWTH = (("grpc.http2.bdp_probe", 0),)


def admin_metadata(secret_file: Path) -> tuple[tuple[str, str], ...]:
    return ClusterSecret.load(secret_file).metadata(ADMIN_ROLE)


async def send(members: Members, auth: Metadata, body: str, count: int) -> None:
    for n in range(count):
        request = pb.SendMessageRequest(recipient="bob", body=f"{body}{n}")
        await members.call("SendMessage", request, auth)


# -- the round trip --------------------------------------------------------------------------


async def test_a_save_asked_of_a_follower_restores_every_account_and_message(
    tmp_path: Path,
) -> None:
    snap = tmp_path / "chat.snapshot"
    old = tmp_path / "old"
    old.mkdir()
    async with running_cluster(old, NODE_ARGS) as (cluster, members):
        alice = await sign_up(members, "alice")
        bob = await sign_up(members, "bob")
        await send(members, alice, "m", SENDS)
        await wait_caught_up(members)
        leader = await members.find_leader()
        follower = next(i for i in cluster.nodes if i != leader)
        secret = ("--cluster-secret-file", str(cluster.secret_file))
        out = await ctl_ok(
            "--cluster", cluster.nodes[follower].address, *secret, "snapshot", "save", str(snap)
        )
        at_save = state_rows(state_of(cluster, leader))  # no write came in since
        sent = [(m.id, m.body) for m in await served_inbox(members, "bob", bob)]
    info = snapshot_file.extract(snap, tmp_path / "saved.db")
    saved = state_rows(tmp_path / "saved.db")
    (tmp_path / "saved.db").unlink()
    assert all(saved[table] == at_save[table] for table in USER_TABLES)
    assert out.strip() == (
        f"saved the state of node {leader} at index {info.header.index} "
        f"(term {info.header.term}) to {snap}: {info.file_size} bytes, sha256 {info.sha256}"
    )
    assert info.header.leader == leader and info.file_size == snap.stat().st_size
    assert info.header.leader_term >= info.header.term > 0
    assert not snap.with_name(snap.name + ".tmp").exists()
    assert sorted(os.listdir(tmp_path)) == ["chat.snapshot", "old"]

    status = await ctl_ok("snapshot", "status", str(snap))
    fields = dict(re.findall(r"^(\w+) +(.*)$", status, re.MULTILINE))
    assert fields["index"] == str(info.header.index) and fields["term"] == str(info.header.term)
    assert fields["size"].startswith(f"{snap.stat().st_size} bytes")
    assert fields["sha256"] == info.sha256

    async with restored_from(tmp_path, snap) as restored:
        assert not list(restored.nodes[1].data_dir.glob(".chat-restore-*"))  # scratch removed
        members = Members(restored)
        try:
            await log_in(members, "alice")  # the account and its password came along
            served = await served_inbox(members, "bob", bob)  # and bob's old session
            assert [(m.id, m.body) for m in served] == sent and len(sent) == SENDS
            reply = await members.call(
                "SendMessage", pb.SendMessageRequest(recipient="bob", body="after"), alice
            )
            assert reply.message_id > info.header.index
        finally:
            await members.close()
        rows = state_rows(state_of(restored, 1))
        for table in USER_TABLES:
            if table == "messages":
                rows[table] = [row for row in rows[table] if row[0] != reply.message_id]
            assert rows[table] == saved[table], table


def state_of(cluster: Cluster, node_id: int) -> Path:
    return cluster.nodes[node_id].data_dir / "state.db"


# -- the leader serves while a save streams ---------------------------------------------------


async def test_the_leader_takes_writes_while_a_save_is_held_open_and_saves_one_at_a_time(
    tmp_path: Path,
) -> None:
    async with running_cluster(tmp_path, NODE_ARGS) as (cluster, members):
        alice = await sign_up(members, "alice")
        await sign_up(members, "bob")
        await send(members, alice, BIG_BODY, BIG_SENDS)
        leader = await members.find_leader()
        metadata = admin_metadata(cluster.secret_file)
        address = cluster.nodes[leader].address
        async with grpc.aio.insecure_channel(address, options=NO_WINDOW_GROWTH) as channel:
            stub = replication_pb2_grpc.AdminStub(channel)
            held = stub.SaveSnapshot(rpb.SaveSnapshotRequest(), metadata=metadata, timeout=WAIT_S)
            first = await held.read()
            assert not first.last and first.size > len(first.data) > 0  # held mid-way

            second = stub.SaveSnapshot(rpb.SaveSnapshotRequest(), metadata=metadata, timeout=WAIT_S)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await second.read()
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

            async with asyncio.timeout(WAIT_S):
                await send(members, alice, "during the save ", 1)

            rest = []
            while (chunk := await held.read()) is not grpc.aio.EOF:
                rest.append(chunk)
            assert rest[-1].last and sum(len(c.data) for c in [first, *rest]) == first.size

            dropped = stub.SaveSnapshot(rpb.SaveSnapshotRequest(), metadata=metadata)
            await dropped.read()
            dropped.cancel()  # an operator's Ctrl-C mid-way frees the node's save
            async for _ in deadline_loop(WAIT_S, "a save after a dropped one"):
                again = stub.SaveSnapshot(rpb.SaveSnapshotRequest(), metadata=metadata)
                try:
                    chunks = [chunk async for chunk in again]
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                    continue
                assert chunks[-1].last and chunks[0].index > first.index
                break
        assert not list(cluster.nodes[leader].data_dir.glob("snapshot-save*"))


# -- refusals ---------------------------------------------------------------------------------


async def test_a_follower_points_to_the_leader_and_no_credentials_get_nothing(
    tmp_path: Path,
) -> None:
    async with running_cluster(tmp_path, NODE_ARGS) as (cluster, members):
        await sign_up(members, "alice")
        leader = await members.find_leader()
        follower = next(i for i in cluster.nodes if i != leader)
        metadata = admin_metadata(cluster.secret_file)
        async with grpc.aio.insecure_channel(cluster.nodes[follower].address) as channel:
            call = replication_pb2_grpc.AdminStub(channel).SaveSnapshot(
                rpb.SaveSnapshotRequest(), metadata=metadata, timeout=WAIT_S
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call.read()
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        hint = dict(refused.value.trailing_metadata() or ())
        assert hint["leader-address"] == cluster.nodes[leader].address

        snap = tmp_path / "chat.snapshot"
        code, _, err = await chatctl("--cluster", cluster.spec, "snapshot", "save", str(snap))
        assert code == 1 and err == (
            "chatctl: peer and admin calls need the cluster secret or a member/admin certificate\n"
        )
        wrong = tmp_path / "wrong.secret"
        await ctl_ok("secret", "new", str(wrong))
        code, _, err = await chatctl(
            "--cluster-secret-file", str(wrong), "--cluster", cluster.spec,
            "snapshot", "save", str(snap),
        )  # fmt: skip
        assert code == 1 and err == "chatctl: wrong cluster credentials\n"
        assert not snap.exists() and not snap.with_name(snap.name + ".tmp").exists()

        secret = ("--cluster-secret-file", str(cluster.secret_file))
        await ctl_ok("--cluster", cluster.spec, *secret, "snapshot", "save", str(snap))
        line = ctl_fails("--cluster", cluster.spec, *secret, "snapshot", "save", str(snap))
        assert line == f"chatctl: {snap} exists; choose another name or remove it first"
    damaged_files_are_refused(tmp_path, snap)


def damaged_files_are_refused(tmp_path: Path, snap: Path) -> None:
    """A flipped byte, a truncated file and a file of another kind: status and restore each
    exit 1 with one line, and restore writes nothing."""
    whole = snap.read_bytes()
    flipped = tmp_path / "flipped.snapshot"
    middle = len(whole) // 2
    flipped.write_bytes(whole[:middle] + bytes([whole[middle] ^ 1]) + whole[middle + 1 :])
    truncated = tmp_path / "truncated.snapshot"
    truncated.write_bytes(whole[: len(whole) - 100])
    other = tmp_path / "other.snapshot"
    other.write_text("not a snapshot\n")
    expected = {
        flipped: f"chatctl: {flipped} is damaged: it fails its SHA-256 check",
        truncated: f"chatctl: {truncated} is damaged: {len(whole) - 100} bytes where its header "
        f"says {len(whole)}",
        other: f"chatctl: {other} is not a chat snapshot file",
    }
    restore = ("--id", "1", "--address", "127.0.0.1:7001")
    fresh = tmp_path / "restores" / "node-1"
    for path, line in expected.items():
        assert ctl_fails("snapshot", "status", str(path)) == line
        if path is not other:  # another kind of file is read as a plain backup
            assert ctl_fails("restore", str(path), "--data-dir", str(fresh), *restore) == line
    assert not fresh.exists() and not any(fresh.parent.iterdir())
