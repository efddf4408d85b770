"""A removed member learns it was removed, and never leads on its stale view.

Node 4 of four is removed and left running. Then nodes 1 to 3 are killed with
kill -9: node 4, alive, never restarted and the only node up, is exactly the
candidate the fail-stop rule (a) would elect if it still believed it was in
the ISR. It must know better: it reports role ``removed`` and never leads.
Nodes 1 to 3 restart, elect among themselves, and have lost nothing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from chatnode.local_cluster import local_cluster
from proto import chat_pb2 as pb
from proto import chat_pb2_grpc
from proto import replication_pb2 as rpb
from tests.support.faults import (
    LEASE_S,
    NODE_ARGS,
    POLL_S,
    Load,
    Members,
    deadline_loop,
    settle,
    sign_up,
    verify_inbox,
)

ALONE_S = 4 * LEASE_S  # how long node 4 is the only node up: it would have led by then


async def test_a_removed_member_left_running_never_leads(tmp_path: Path) -> None:
    with local_cluster(tmp_path, size=4, extra_args=NODE_ARGS) as cluster:
        members = Members(cluster)
        try:
            leader = await members.find_leader()
            if leader == 4:  # the leader cannot remove itself: hand over first
                cluster.admin(4, "TransferLeader", rpb.TransferLeaderRequest(id=1))
                leader = await members.find_leader(among=[1, 2, 3])
            auth = await sign_up(members, "sink")
            cluster.admin(leader, "RemoveMember", rpb.RemoveMemberRequest(id=4))
            async for _ in deadline_loop(10, "node 4 reports that it was removed"):
                status = await members.status(4)
                if status is not None and status.role == "removed":
                    break
        finally:
            await members.close()
        removed = cluster.nodes.pop(4)
        members = Members(cluster)
        try:
            await settle(members, "sink")
            load = Load(members, auth, "sink", writers=2).start()
            await load.run_phase("before", 30)
            await load.stop()
            for node in cluster.nodes.values():
                node.kill()
            seen = await roles_of(removed.address, ALONE_S)
            assert seen == {"removed"}, seen
            for node in cluster.nodes.values():
                node.start()
            await verify_inbox(members, load, "sink", auth)
            leader_view = (await members.statuses())[await members.find_leader()]
            assert sorted(m.id for m in leader_view.members) == [1, 2, 3]
        finally:
            await members.close()
            removed.kill()
        assert "role leader" not in removed.log_text()


async def roles_of(address: str, within_s: float) -> set[str]:
    """Every role the node at address reports while polled for within_s (it must answer)."""
    roles: set[str] = set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    async with grpc.aio.insecure_channel(address) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        while loop.time() < deadline:
            status = await stub.GetClusterStatus(pb.GetClusterStatusRequest(), timeout=1)
            roles.add(status.role)
            await asyncio.sleep(POLL_S)
    return roles
