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
    progress = {
        peer: (p.match, p.next, p.mode, p.probe_sent, tuple(p.inflight), p.acked_sent_at)
        for peer, p in node._progress.items()
    }
    ballot = node._ballot
    return (
        node.term,
        node.voted_for,
        node.role,
        node.leader_id,
        node._term_leader,
        node.commit,
        node.restarted,
        node.view,
        tuple(entries or ()),
        node.log.stable_last,
        progress,
        (node._lease.leader_id, node._lease.until_ms),
        node._election_at,
        None if ballot is None else (ballot.term, dict(ballot.replies)),
        node.has_ready(),
        tuple(node._outbox),
        node._install,
    )
