"""SIGKILL under load loses nothing acknowledged; SIGTERM drains and exits 0."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import grpc

from chatnode.local_cluster import local_cluster
from proto import chat_pb2 as pb
from proto import chat_pb2_grpc
from tests.support.nodes import PASSWORD, signup

WRITERS = 8
KILL_AFTER = 300  # acknowledged messages before the kill


async def _write_until_broken(
    stub: chat_pb2_grpc.ChatServiceStub,
    auth,
    writer: int,
    acked: dict[str, int],
    enough: asyncio.Event,
) -> None:
    """Send messages until the node dies; record each acknowledged (request_id -> id)."""
    for seq in range(100_000):
        request_id = f"w{writer}-{seq}"
        request = pb.SendMessageRequest(recipient="sink", body=request_id, request_id=request_id)
        try:
            reply = await stub.SendMessage(request, metadata=auth, timeout=5)
        except grpc.aio.AioRpcError:
            return
        acked[request_id] = reply.message_id
        if len(acked) >= KILL_AFTER:
            enough.set()


async def _stored_bodies(address: str) -> list[tuple[int, str]]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        login = await stub.Login(pb.LoginRequest(username="sink", password=PASSWORD), timeout=10)
        auth = (("authorization", f"Bearer {login.session_token}"),)
        stream = stub.Subscribe(pb.SubscribeRequest(after_id=0), metadata=auth, timeout=30)
        await stream.read()  # LeaderInfo
        out = []
        while len(out) < login.unread_count:
            event = await asyncio.wait_for(stream.read(), timeout=10)
            out.append((event.message.id, event.message.body))
        stream.cancel()
        return out


async def test_kill_9_under_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    with local_cluster(tmp_path, size=1) as cluster:
        node = cluster.nodes[1]
        acked: dict[str, int] = {}
        enough = asyncio.Event()
        async with grpc.aio.insecure_channel(node.address) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            await signup(stub, "sink")
            auths = [await signup(stub, f"writer{i}") for i in range(WRITERS)]
            writers = [
                asyncio.create_task(_write_until_broken(stub, auth, i, acked, enough))
                for i, auth in enumerate(auths)
            ]
            await asyncio.wait_for(enough.wait(), timeout=60)
            node.kill()
            await asyncio.wait_for(asyncio.gather(*writers), timeout=30)
        assert len(acked) >= KILL_AFTER
        node.start()
        cluster.wait_for_leader()
        stored = await _stored_bodies(node.address)
    ids = [message_id for message_id, _ in stored]
    assert ids == sorted(set(ids)), "stored messages must be unique and in id order"
    by_body = dict((body, message_id) for message_id, body in stored)
    missing = {rid for rid in acked if rid not in by_body}
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {sorted(missing)[:5]}"
    assert all(by_body[rid] == mid for rid, mid in acked.items()), "ids changed across restart"


async def test_sigterm_drains_and_exits_zero(tmp_path: Path) -> None:
    with local_cluster(tmp_path, size=1) as cluster:
        node = cluster.nodes[1]
        async with grpc.aio.insecure_channel(node.address) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            auth = await signup(stub, "sink")
            await stub.SendMessage(
                pb.SendMessageRequest(recipient="sink", body="before stop"), metadata=auth
            )
        node.signal(signal.SIGTERM)
        assert node.wait(timeout=15) == 0
        assert "Traceback" not in node.log_text()
        node.start()
        cluster.wait_for_leader()
        stored = await _stored_bodies(node.address)
    assert [body for _, body in stored] == ["before stop"]
