"""Prometheus metrics of the coordinator (scraped from ``chatnode --metrics-listen``)."""

from prometheus_client import Counter, Gauge, Histogram

LOG_FSYNCS = Counter(
    "chat_log_fsyncs", "Durable log transactions: one fsync each, however many entries"
)
LOG_ENTRIES = Counter("chat_log_entries", "Log entries made durable")
PEER_REFUSED = Counter(
    "chat_peer_refused",
    "Peer and admin calls or messages refused: bad credentials, another sender, a non-member",
    ["reason"],
)
PEER_SEND_DROPPED = Counter(
    "chat_peer_send_dropped",
    "Peer messages dropped because a peer's bounded send queue was full (the protocol resends)",
)
PEER_ENTRY_WRITES = Counter(
    "chat_peer_entry_writes",
    "Batches carrying log entries written to a peer (one stream write or Deliver call each)",
)
PEER_ENTRIES_SENT = Counter("chat_peer_entries_sent", "Log entries in the batches written to peers")
HEARTBEAT_GAP = Histogram(
    "chat_follower_heartbeat_gap_seconds",
    "On a follower: time between two Appends from the same leader in one term; a gap near "
    "the lease means the follower was about to stop following (an overloaded leader or link)",
    buckets=(0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0),
)
DISK_FAULTS = Counter(
    "chat_disk_faults",
    "Durable writes that failed with a full disk or an I/O error and were retried",
    ["store"],
)
PEER_CLOCK_OFFSET = Gauge(
    "chat_peer_clock_offset_seconds",
    "On the leader: a member's wall clock minus the leader's, from heartbeat round trips",
    ["peer"],
)
LOG_FSYNC_SECONDS = Histogram(
    "chat_log_fsync_seconds",
    "Time of each durable log write (one transaction and its fsync, however many entries)",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
