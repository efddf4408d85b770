"""``chatctl bench --tls``: the certificates bench.tls makes put its own cluster under mutual
TLS, which refuses plaintext callers and callers without a certificate."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import pytest

from bench.nodes import wait_until_healthy
from bench.tls import make_tls
from chatnode.local_cluster import local_cluster, status_at

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


async def test_the_bench_certificates_run_a_cluster_under_mutual_tls(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls", (1, 2, 3))
    credentials = tls.credentials()
    with local_cluster(tmp_path, 3, node_args=tls.node_args(), credentials=credentials) as cluster:
        nodes = list(cluster.nodes.values())
        leader = await wait_until_healthy(nodes, credentials, timeout_s=20)
        address = cluster.nodes[leader].address
        assert status_at(address, 2, credentials) is not None
        assert status_at(address, 2) is None  # plaintext
        no_certificate = grpc.ssl_channel_credentials(root_certificates=tls.ca.read_bytes())
        assert status_at(address, 2, no_certificate) is None
