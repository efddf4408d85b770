"""How the nodes fare as messages pile up: resident memory, and write latency at scale.

Memory: RSS of every node after N stored messages. The design keeps nothing
in Python memory that grows with messages, so RSS should stay flat; only
SQLite's page cache (bounded) and the allocator's high-water mark grow.

Scale: sequential ``SendMessage`` latency (one client, one call at a time, so
the figure is the per-write cost and not queueing) with ~1,000 messages stored
and again with a million. The million goes in through the API, as a user's
would; the only shortcut is concurrency, which lets group commit put many
messages in each fsync: the messages, their log entries and the indexes the
state keeps are the same as any load would make.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from bench.load import Fleet, fill, p50_p99_ms, send_load
from chatnode.admission import ACTIVE_WINDOW_S
from chatnode.local_cluster import NodeProcess

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class MemoryResult:
    stored_messages: int
    rss_mib_at_start: dict[str, float]  # node id -> MiB, before the bench's load
    rss_mib: dict[str, float]  # node id -> MiB, after stored_messages
    load_per_second: float


@dataclass(frozen=True, slots=True)
class ScalePoint:
    stored_messages: int  # stored when the samples started
    samples: int
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True, slots=True)
class ScaleResult:
    small: ScalePoint
    large: ScalePoint
    load_clients: int
    load_per_second: float  # of the bulk load between the two points


def rss_mib(nodes: Sequence[NodeProcess]) -> dict[str, float]:
    return {str(n.node_id): round(n.rss_bytes() / MIB, 1) for n in nodes}


async def measure_memory(
    nodes: Sequence[NodeProcess],
    fleet: Fleet,
    at_start: dict[str, float],
    messages: int,
    load_clients: int,
) -> MemoryResult:
    """Fill to `messages` stored with `load_clients` concurrent senders, then read RSS."""
    await fleet.follow_leader()
    rate = await fill(fleet, messages, load_clients)
    return MemoryResult(fleet.stored, at_start, rss_mib(nodes), rate)


async def sequential_point(
    fleet: Fleet, stored: int, samples: int, load_clients: int
) -> ScalePoint:
    """Fill to `stored`, then time `samples` writes one after another from one client.

    The leader splits its proposal budget between the accounts active in the last
    ACTIVE_WINDOW_S (chatnode.admission), so the samples wait that long after the fill:
    at once, their one sender would be held to a share of the fill's many, and refused.
    """
    await fleet.follow_leader()
    await fill(fleet, stored, load_clients)
    await asyncio.sleep(ACTIVE_WINDOW_S + 1)  # past it: forgotten only beyond the window
    before = fleet.stored
    _, latencies = await send_load(fleet, 1, samples)
    p50, p99 = p50_p99_ms(latencies)
    return ScalePoint(before, len(latencies), p50, p99)


async def measure_scale_large(
    fleet: Fleet, small: ScalePoint, stored: int, samples: int, load_clients: int
) -> ScaleResult:
    """The second point of the scale part; small was taken at the start of the bench."""
    await fleet.follow_leader()
    rate = await fill(fleet, stored, load_clients)
    large = await sequential_point(fleet, stored, samples, load_clients)
    return ScaleResult(small, large, load_clients, rate)
