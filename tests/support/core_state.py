"""A node's whole observable state in comparable form, for tests that check a refused input
changed nothing."""

from __future__ import annotations

from typing import Any

from coord.core.node import Node


def observe(node: Node) -> tuple[Any, ...]:
    """Everything of a node a message could change, in comparable form."""
    last = node.log.last_index()
    first = node.log.first_available()
    entries = node.log.entries(first, last + 1, 1 << 30) if last >= first else []
    return (node.inspect(), tuple(entries or ()), node.log.stable_last, node.has_ready())
