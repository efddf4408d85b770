"""Prometheus metrics of the coordinator (scraped from ``chatnode --metrics-listen``)."""

from prometheus_client import Counter

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
