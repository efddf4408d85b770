"""The node's state as Prometheus gauges, sampled on the event loop at each scrape.

prometheus_client answers scrapes in a thread of its own, while the
coordinator, the applier and the stream hub belong to the event loop: read
from that thread, a dict could change size under the reader. So a scrape asks
the loop for one :class:`Sample` (a copy, taken between two steps of the loop)
and builds the families from it in the scrape thread. Nothing is counted per
op. A loop that does not answer within :data:`SAMPLE_TIMEOUT_S` leaves these
families out of that scrape (and logs why): their absence says the loop is stuck,
while the process and counter metrics are still served.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import prometheus_client
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from chatnode.applier import Applier
from chatnode.live import LiveHub
from chatnode.passwords import HashPool
from coord.boundary import Coordinator, Status

log = logging.getLogger(__name__)

SAMPLE_TIMEOUT_S = 2.0

STREAM_KINDS = {"Subscribe": "subscribe", "Session": "session"}


@dataclass(frozen=True, slots=True)
class Sample:
    """What one scrape reports, copied on the loop."""

    status: Status
    applied_index: int
    lags: dict[int, tuple[int, int]]  # follower -> (entries, ms) behind the leader's log
    in_flight: int
    streams: Counter[str]
    hash_queue: int


@dataclass(frozen=True, slots=True)
class Sources:
    """The loop-owned objects a sample reads."""

    coordinator: Coordinator
    applier: Applier
    hub: LiveHub
    hashes: HashPool

    def sample(self) -> Sample:
        return Sample(
            status=self.coordinator.status(),
            applied_index=self.applier.applied_index,
            lags=self.coordinator.follower_lags(),
            in_flight=self.applier.in_flight,
            streams=self.hub.open_streams(),
            hash_queue=self.hashes.admitted,
        )


class NodeCollector(Collector):
    """Serves :func:`families` of a sample the event loop takes at each scrape."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sample: Callable[[], Sample]) -> None:
        self._loop = loop
        self._sample = sample

    def describe(self) -> list[Any]:
        # Without this the registry would collect once to learn the names, on the loop's
        # own thread, waiting for the loop.
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            sample = asyncio.run_coroutine_threadsafe(self._take(), self._loop).result(
                SAMPLE_TIMEOUT_S
            )
        except (TimeoutError, RuntimeError) as exc:  # stuck, or closed (the node stopped)
            log.warning(
                "no metrics sample from the event loop: %s",
                exc or type(exc).__name__,
                extra={"event": "metrics_stuck"},
            )
            return
        yield from families(sample)

    async def _take(self) -> Sample:
        return self._sample()


def families(sample: Sample) -> Iterator[GaugeMetricFamily]:
    """The gauges of one sample (docs/operations.md, "Metrics", says what each means)."""
    status = sample.status
    leading = status.role == "leader"
    yield _gauge("chat_node_id", "This node's id", status.node_id)
    yield _gauge("chat_is_leader", "1 if this node leads now, else 0", int(leading))
    yield _gauge("chat_term", "This node's current term", status.term)
    yield _gauge("chat_leader_id", "The leader this node knows of; 0 if none", status.leader_id)
    yield _gauge("chat_commit_index", "The highest log index known committed", status.commit_index)
    yield _gauge("chat_applied_index", "The highest log index applied", sample.applied_index)
    yield _gauge("chat_members", "Voting members in this node's configuration", len(status.members))
    yield _gauge(
        "chat_min_insync",
        "In-sync members a commit needs: the operator's floor, a majority in quorum mode",
        status.min_insync,
    )
    yield _gauge(
        "chat_isr_size",
        "Members in the in-sync set of this node's configuration, the leader included",
        sum(member.in_sync for member in status.members),
    )
    yield _gauge(
        "chat_disk_fault", "1 while this node cannot write to its disk", int(bool(status.fault))
    )
    yield _gauge("chat_proposals_in_flight", "Ops proposed here, not answered", sample.in_flight)
    yield _gauge(
        "chat_password_hash_queue", "Password hashes running or waiting", sample.hash_queue
    )
    streams = GaugeMetricFamily("chat_open_streams", "Streams open on this node", labels=["kind"])
    for kind, label in STREAM_KINDS.items():
        streams.add_metric([label], sample.streams.get(kind, 0))
    yield streams
    entries = GaugeMetricFamily(
        "chat_follower_lag_entries",
        "On the leader: entries of its log a follower has not acknowledged",
        labels=["follower"],
    )
    seconds = GaugeMetricFamily(
        "chat_follower_lag_seconds",
        "On the leader: 0 if a follower holds its whole log, else the time (monotonic clock) "
        "since the latest moment whose whole log the follower has acknowledged",
        labels=["follower"],
    )
    for follower, (lag_entries, lag_ms) in sorted(sample.lags.items()):
        entries.add_metric([str(follower)], lag_entries)
        seconds.add_metric([str(follower)], lag_ms / 1000)
    yield entries
    yield seconds


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class MetricsServer:
    """The HTTP endpoint of ``--metrics-listen`` with this node's collector registered."""

    def __init__(self, listen: str, collector: NodeCollector) -> None:
        host, _, port = listen.rpartition(":")
        self._server, self._thread = prometheus_client.start_http_server(
            int(port), addr=host or "0.0.0.0"
        )
        REGISTRY.register(collector)
        self._collector = collector

    def close(self) -> None:
        REGISTRY.unregister(self._collector)
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
