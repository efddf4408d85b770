"""A node started with a certificate serves TLS only; clients that trust the CA get through."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import grpc
import pytest

from chatnode.local_cluster import free_port
from chatnode.server import ChatNode, NodeConfig, TlsFiles
from proto import chat_pb2 as pb
from proto import chat_pb2_grpc
from tests.support.nodes import elected, in_process_cluster, wait_until_serving
from tests.support.tls import CertificateAuthority, make_tls


async def test_tls_node_accepts_trusting_clients_only(tmp_path: Path) -> None:
    tls = make_tls(tmp_path)
    address = f"127.0.0.1:{free_port()}"
    config = NodeConfig(
        node_id=1,
        cluster={1: address},
        data_dir=tmp_path / "n1",
        tls=TlsFiles(cert=tls.cert, key=tls.key),
    )
    node = ChatNode(config)
    await node.start()
    try:
        await wait_until_serving(node)
        credentials = grpc.ssl_channel_credentials(root_certificates=tls.ca.read_bytes())
        async with grpc.aio.secure_channel(address, credentials) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            status = await stub.GetClusterStatus(pb.GetClusterStatusRequest(), timeout=5)
            assert status.role == "leader"
        async with grpc.aio.insecure_channel(address) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetClusterStatus(pb.GetClusterStatusRequest(), timeout=2)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        secure = await chatctl_status(address, "--tls-ca", str(tls.ca))
        assert secure[0] == 0 and json.loads(secure[1])[0]["role"] == "leader"
        assert (await chatctl_status(address))[0] == 1  # plaintext finds nobody
    finally:
        await node.stop()


async def chatctl_status(address: str, *flags: str) -> tuple[int, str]:
    """Run `chatctl status --json` without blocking the loop the node serves on."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "client.chatctl", "--cluster", f"1={address}", *flags,
        "status", "--json", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    return proc.returncode or 0, out.decode()


async def test_three_tls_nodes_with_client_certificates_replicate(tmp_path: Path) -> None:
    """Peers dial each other over mutual TLS, each certificate naming its member: without
    that no leader could be elected (there is no cluster secret here)."""
    authority = CertificateAuthority(tmp_path)
    certs = {i: authority.issue(f"node-{i}", (f"node/{i}",)) for i in (1, 2, 3)}
    tls = authority.issue("chat-user")
    files = {
        i: TlsFiles(cert=certs[i].cert, key=certs[i].key, ca=authority.path) for i in (1, 2, 3)
    }
    async with in_process_cluster(tmp_path, lambda i: {"tls": files[i]}) as nodes:
        leader = await elected(nodes)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=tls.ca.read_bytes(),
            private_key=tls.key.read_bytes(),
            certificate_chain=tls.cert.read_bytes(),
        )
        async with grpc.aio.secure_channel(leader.config.address, credentials) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            status = await stub.GetClusterStatus(pb.GetClusterStatusRequest(), timeout=5)
        assert status.role == "leader" and sorted(m.id for m in status.members if m.in_sync) == [
            1,
            2,
            3,
        ]
