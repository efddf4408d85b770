"""Prometheus metrics of the coordinator (scraped from ``chatnode --metrics-listen``)."""

from prometheus_client import Counter

LOG_FSYNCS = Counter(
    "chat_log_fsyncs", "Durable log transactions: one fsync each, however many entries"
)
LOG_ENTRIES = Counter("chat_log_entries", "Log entries made durable")
