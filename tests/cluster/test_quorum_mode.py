"""Quorum mode on real processes: a majority keeps serving, a minority refuses to."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatnode.local_cluster import local_cluster
from client.library import ChatClient, RetryPolicy, Unavailable
from tests.support.nodes import PASSWORD

SHORT = RetryPolicy(deadline_s=4.0)


async def test_two_of_three_serve_and_one_alone_refuses(tmp_path: Path) -> None:
    with local_cluster(tmp_path, size=3, extra_args=("--min-insync", "2")) as cluster:
        async with ChatClient(cluster.addresses) as client:
            await client.create_account("q", PASSWORD)
            await client.login("q", PASSWORD)
            first = await client.send_message("q", "three up")
            status = await client.cluster_status()
            assert status.min_insync == 2

            leader = cluster.wait_for_leader()
            cluster.nodes[leader].kill()
            second = await client.send_message("q", "two up")  # a majority remains
            assert second.message_id > first.message_id

            survivor = cluster.wait_for_leader()
            cluster.nodes[survivor].kill()
        async with ChatClient(cluster.addresses, policy=SHORT) as alone:
            with pytest.raises(Unavailable):
                await alone.login("q", PASSWORD)  # one node is no majority: no leader

        cluster.nodes[leader].start()
        async with ChatClient(cluster.addresses) as client:
            await client.login("q", PASSWORD)
            unread = await client.read_messages(10)
    assert [m.body for m in unread.messages] == ["three up", "two up"]
