"""Two listeners: peers and operators on one port behind mutual TLS, chat users on another
behind server-only TLS, holding no certificate of their own."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest

from bench.nodes import remote_nodes
from chatnode.main import config_from_args
from chatnode.server import ChatNode, TlsFiles
from client.connect import leader_hint
from client.library import ChatClient
from proto import chat_pb2 as pb
from proto import chat_pb2_grpc, replication_pb2_grpc
from proto import replication_pb2 as rpb
from proto.addresses import MemberAddress, client_address, peer_address
from proto.credentials import ADMIN_ROLE, node_role
from tests.support.clients import Inbox
from tests.support.nodes import PASSWORD, elected, in_process_cluster
from tests.support.tls import CertificateAuthority, TlsMaterial

CALL_S = 5.0


def two_listener_cluster(tmp_path: Path, authority: CertificateAuthority) -> Any:
    """Three in-process nodes: mutual TLS with member certificates between peers, the same
    certificates as server-only TLS towards chat clients."""
    certs = {i: authority.issue(f"node-{i}", (node_role(i),)) for i in (1, 2, 3)}

    def options(i: int) -> dict[str, Any]:
        return {
            "tls": TlsFiles(certs[i].cert, certs[i].key, authority.path),
            "client_tls": TlsFiles(certs[i].cert, certs[i].key),
        }

    return in_process_cluster(tmp_path, options, two_listeners=True)


def clients_of(node: ChatNode) -> str:
    return client_address(node.config.address)


def peers_of(node: ChatNode) -> str:
    return peer_address(node.config.address)


def trusting(authority: CertificateAuthority, leaf: TlsMaterial | None = None) -> Any:
    """Channel credentials that trust the CA, presenting leaf's certificate if given."""
    return grpc.ssl_channel_credentials(
        root_certificates=authority.path.read_bytes(),
        private_key=leaf.key.read_bytes() if leaf else None,
        certificate_chain=leaf.cert.read_bytes() if leaf else None,
    )


async def test_a_chat_user_without_a_certificate_chats_and_is_sent_to_client_listeners(
    tmp_path: Path,
) -> None:
    authority = CertificateAuthority(tmp_path)
    user = trusting(authority)
    async with two_listener_cluster(tmp_path, authority) as nodes:
        leader = await elected(nodes)
        follower = next(n for n in nodes if n is not leader)
        async with grpc.aio.secure_channel(clients_of(follower), user) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                request = pb.LoginRequest(username="nobody", password=PASSWORD)
                await stub.Login(request, timeout=CALL_S)
            status = await stub.GetClusterStatus(pb.GetClusterStatusRequest(), timeout=CALL_S)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert leader_hint(refused.value) == clients_of(leader)
        assert status.leader_address == clients_of(leader)
        assert {m.address for m in status.members} == {n.config.address for n in nodes}

        client = ChatClient([clients_of(n) for n in nodes], credentials=user)
        try:
            await client.create_account("ada", PASSWORD)
            await client.login("ada", PASSWORD)
            inbox = Inbox(client)
            await client.send_message("ada", "over server-only TLS")
            assert [m.body for m in await inbox.wait_for(1)] == ["over server-only TLS"]
            await inbox.close()
        finally:
            await client.close()

        async with grpc.aio.secure_channel(clients_of(leader), user) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            token = (
                await stub.Login(pb.LoginRequest(username="ada", password=PASSWORD))
            ).session_token
            stream = stub.Subscribe(
                pb.SubscribeRequest(), metadata=(("authorization", f"Bearer {token}"),)
            )
            first = await asyncio.wait_for(stream.read(), CALL_S)
            stream.cancel()
        assert first.leader.leader_address == clients_of(leader)


async def test_each_listener_serves_only_its_own_callers(tmp_path: Path) -> None:
    authority = CertificateAuthority(tmp_path)
    operator = trusting(authority, authority.issue("operator", (ADMIN_ROLE,)))
    user = trusting(authority)
    async with two_listener_cluster(tmp_path, authority) as nodes:
        leader = await elected(nodes)
        follower = next(n for n in nodes if n is not leader)
        target = rpb.TransferLeaderRequest(id=follower.config.node_id)

        async def admin(address: str, credentials: Any) -> grpc.StatusCode:
            async with grpc.aio.secure_channel(address, credentials) as channel:
                stub = replication_pb2_grpc.AdminStub(channel)
                try:
                    await stub.TransferLeader(target, timeout=CALL_S)
                except grpc.aio.AioRpcError as exc:
                    return exc.code()
            return grpc.StatusCode.OK

        async def chat(address: str, credentials: Any) -> grpc.StatusCode:
            async with grpc.aio.secure_channel(address, credentials) as channel:
                stub = chat_pb2_grpc.ChatServiceStub(channel)
                try:
                    await stub.GetClusterStatus(pb.GetClusterStatusRequest(), timeout=CALL_S)
                except grpc.aio.AioRpcError as exc:
                    return exc.code()
            return grpc.StatusCode.OK

        # No certificate: no TLS session on the peer listener at all.
        assert await admin(peers_of(leader), user) == grpc.StatusCode.UNAVAILABLE
        # The operator's certificate opens nothing of the peer API on the client listener,
        # and the chat API is not on the peer listener.
        assert await admin(clients_of(leader), operator) == grpc.StatusCode.UNIMPLEMENTED
        assert await chat(peers_of(leader), operator) == grpc.StatusCode.UNIMPLEMENTED
        assert leader.coordinator.status().leader_id == leader.config.node_id
        # Where it belongs, the operator's call goes through, once its fields check out.
        async with grpc.aio.secure_channel(peers_of(leader), operator) as channel:
            stub = replication_pb2_grpc.AdminStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await stub.AddMember(rpb.AddMemberRequest(id=9, address="h:1/h"), timeout=CALL_S)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert len(leader.coordinator.status().members) == 3
        assert await admin(peers_of(leader), operator) == grpc.StatusCode.OK


async def test_chatctl_finds_each_members_peer_listener_for_admin_verbs(tmp_path: Path) -> None:
    authority = CertificateAuthority(tmp_path)
    operator = authority.issue("operator", (ADMIN_ROLE,))
    tls = ["--tls-ca", str(authority.path), "--tls-cert", str(operator.cert)]
    tls += ["--tls-key", str(operator.key)]
    async with two_listener_cluster(tmp_path, authority) as nodes:
        leader = await elected(nodes)
        follower = next(n for n in nodes if n is not leader)
        spec = ",".join(f"{n.config.node_id}={n.config.address}" for n in nodes)
        code, out = await chatctl("--cluster", spec, *tls, "status", "--check")
        assert code == 0, out
        # Sent to the follower's client address first, the verb must end on the leader's peer
        # listener: the status search names the leader, its members list its peer address.
        only_follower = f"{follower.config.node_id}={follower.config.address}"
        code, out = await chatctl(
            "--cluster", only_follower, *tls, "transfer-leader", str(follower.config.node_id)
        )
        assert code == 0, out
        async with asyncio.timeout(10):
            async for view in leader.coordinator.leader_changes():
                if view is not None and view.leader_id == follower.config.node_id:
                    break


async def chatctl(*args: str) -> tuple[int, str]:
    """Run chatctl without blocking the loop the nodes serve on; its exit code and output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "client.chatctl", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, out.decode()


def test_member_addresses_name_one_listener_or_two() -> None:
    assert MemberAddress.parse("h:1") == MemberAddress("h:1", "h:1")
    two = MemberAddress.parse("10.0.0.1:7001/[::1]:7000")
    assert (two.peer, two.client, two.split, str(two)) == (
        "10.0.0.1:7001",
        "[::1]:7000",
        True,
        "10.0.0.1:7001/[::1]:7000",
    )
    for bad in ("h", "h:0", "h:65536", ":1", "h:1/", "h:1/h", "h:1/h:2/h:3", "h:x", "h:1" * 300):
        with pytest.raises(ValueError):
            MemberAddress.parse(bad)
    assert (peer_address("a:1/b:2"), client_address("a:1/b:2")) == ("a:1", "b:2")
    assert (peer_address("a:1"), client_address("a:1")) == ("a:1", "a:1")


@pytest.mark.parametrize(
    ("cluster", "flags", "says"),
    [
        ("1=h:1", ["--listen-client", "0.0.0.0:2"], "--listen-client needs two listeners"),
        ("1=h:1", ["--client-tls-cert", "c", "--client-tls-key", "k"], "needs two listeners"),
        ("1=h:1/h:2", ["--listen", "0.0.0.0:1"], "--listen is for one listener"),
        ("1=h:1/h:2", ["--listen-peer", "0.0.0.0"], "--listen-peer: bad address"),
        ("1=h:1/h:2", ["--listen-client", "a:1/b:2"], "--listen-client: bad address"),
        ("1=h:1/h:2", ["--client-tls-cert", "c"], "go together"),
        ("1=h:1/h", [], "bad member address 'h'"),
    ],
)
def test_listener_flags_that_do_not_fit_are_usage_errors(
    cluster: str, flags: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        config_from_args(["--id", "1", "--cluster", cluster, *flags])
    assert exited.value.code == 2
    assert says in capsys.readouterr().err


def test_two_listeners_bind_where_told() -> None:
    config = config_from_args(["--id", "1", "--cluster", "1=h:1/h:2", "--listen-peer", "0.0.0.0:1"])
    assert config.listeners == MemberAddress("0.0.0.0:1", "h:2")
    assert config_from_args(["--id", "1", "--cluster", "1=h:1"]).listeners == MemberAddress(
        "h:1", "h:1"
    )


def test_the_bench_sends_chat_calls_to_client_listeners() -> None:
    nodes = remote_nodes({1: "a:1/b:2", 2: "c:3"}, "ctl signal")
    assert [(n.node_id, n.address) for n in nodes] == [(1, "b:2"), (2, "c:3")]
