"""Prometheus metrics of the chat layer (scraped from ``chatnode --metrics-listen``)."""

from prometheus_client import Histogram

APPLY_ON_LOOP = Histogram(
    "chat_apply_on_loop_seconds",
    "Time a batch of committed entries held the event loop while it applied there (only "
    "cheap batches do; heartbeats and lease renewals wait behind it)",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25),
)
APPLY = Histogram(
    "chat_apply_seconds",
    "Time to apply one batch of committed entries to the chat state, on the loop or in "
    "the apply thread (chat_apply_on_loop_seconds is the part that held the loop)",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
)
