"""A brand-new node joins a running cluster, grows into the ISR, and can be removed again."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from chatnode.local_cluster import Cluster, NodeProcess, free_port, local_cluster
from proto import chat_pb2 as pb
from proto import chat_pb2_grpc
from proto import replication_pb2 as rpb
from tests.support.nodes import PASSWORD
from tests.support.waits import wait_until


def members(cluster: Cluster, leader: int) -> dict[int, bool]:
    """Member id -> in_sync, as the leader sees it."""
    status = cluster.status(leader)
    return {m.id: m.in_sync for m in status.members} if status else {}


def add_node_4(cluster: Cluster, tmp_path: Path, leader: int) -> None:
    """chatctl add-member 4, then start node 4 with --join, as the README says."""
    address = f"127.0.0.1:{free_port()}"
    cluster.admin(leader, "AddMember", rpb.AddMemberRequest(id=4, address=address))
    spec = f"{cluster.spec},4={address}"
    data_dir = tmp_path / "node-4"
    args = ["--id", "4", "--cluster", spec, "--data-dir", str(data_dir), "--join"]
    args += cluster.secret_args
    cluster.nodes[4] = NodeProcess(4, address, data_dir, args, tmp_path / "node-4.log")
    cluster.nodes[4].start()


def test_adding_a_member_keeps_quorum_mode(tmp_path: Path) -> None:
    """Three nodes with --min-insync 2 are in quorum mode; with a fourth, 2 is not more than
    half, yet the cluster stays in quorum mode and commits need a majority, 3 of 4."""
    with local_cluster(tmp_path, size=3, extra_args=("--min-insync", "2")) as cluster:
        leader = cluster.wait_for_leader()
        assert cluster.status(leader).min_insync == 2 and cluster.status(leader).mode == "quorum"
        add_node_4(cluster, tmp_path, leader)
        wait_until(lambda: members(cluster, leader).get(4) is True, "node 4 is in sync")
        assert cluster.status(leader).min_insync == 3
        assert {cluster.status(i).mode for i in cluster.nodes} == {"quorum"}


def test_new_node_joins_catches_up_and_leaves(tmp_path: Path) -> None:
    with local_cluster(tmp_path, size=3) as cluster:
        leader = cluster.wait_for_leader()
        with grpc.insecure_channel(cluster.nodes[leader].address) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            stub.CreateAccount(pb.CreateAccountRequest(username="before", password=PASSWORD))

        add_node_4(cluster, tmp_path, leader)
        wait_until(lambda: members(cluster, leader).get(4) is True, "node 4 is in sync")
        assert members(cluster, leader) == {1: True, 2: True, 3: True, 4: True}
        assert cluster.status(4).commit_index >= cluster.status(leader).commit_index - 1

        cluster.admin(leader, "RemoveMember", rpb.RemoveMemberRequest(id=4))
        wait_until(lambda: 4 not in members(cluster, leader), "node 4 is removed")
        with pytest.raises(grpc.RpcError) as refused:
            cluster.admin(leader, "RemoveMember", rpb.RemoveMemberRequest(id=leader))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
