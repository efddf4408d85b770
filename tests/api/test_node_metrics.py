"""The node-state collector: sampled on the event loop's thread, and a stuck loop leaves
its gauges out of the scrape instead of holding the scrape."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

import pytest

from chatnode import node_metrics
from chatnode.node_metrics import NodeCollector, Sample
from coord.boundary import Status
from coord.core.status import MemberStatus


def sample() -> Sample:
    members = tuple(MemberStatus(i, f"127.0.0.1:{7000 + i}", "follower", i != 3, 0, True)
                    for i in (1, 2, 3))  # fmt: skip
    status = Status(1, "leader", 4, 1, "127.0.0.1:7001", 9, members, 1, 2, "quorum")
    return Sample(status, 8, {2: (0, 0), 3: (5, 1500)}, 1, Counter(Session=2), 0)


def values(collector: NodeCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in collector.collect()
        for s in family.samples
    }


async def test_a_scrape_reads_the_node_on_the_loops_thread() -> None:
    readers: list[int] = []

    def take() -> Sample:
        readers.append(threading.get_ident())
        return sample()

    collector = NodeCollector(asyncio.get_running_loop(), take)
    got = await asyncio.to_thread(values, collector)
    assert readers == [threading.get_ident()]
    assert got[("chat_is_leader", ())] == 1
    assert got[("chat_term", ())] == 4
    assert got[("chat_isr_size", ())] == 2
    assert got[("chat_members", ())] == 3
    assert got[("chat_min_insync", ())] == 2
    assert got[("chat_follower_lag_entries", (("follower", "3"),))] == 5
    assert got[("chat_follower_lag_seconds", (("follower", "3"),))] == 1.5
    assert got[("chat_open_streams", (("kind", "session"),))] == 2
    assert got[("chat_open_streams", (("kind", "subscribe"),))] == 0


async def test_a_stuck_loop_leaves_its_gauges_out_of_the_scrape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(node_metrics, "SAMPLE_TIMEOUT_S", 0.1)
    collector = NodeCollector(asyncio.get_running_loop(), sample)
    scrape: list[dict] = []
    scraper = threading.Thread(target=lambda: scrape.append(values(collector)))
    scraper.start()
    scraper.join(timeout=5)  # blocks the loop: it cannot take the sample meanwhile
    assert not scraper.is_alive()
    assert scrape == [{}]
