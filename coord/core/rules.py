"""The seam through which a :class:`~coord.core.node.Node` applies its replaceable rules.

A node applies the commit rule (:mod:`coord.core.commit`) and states its own
vote replies through one :class:`Rules` value given at construction. The real
node always uses :data:`RULES`; the simulator's tests pass a :class:`Rules`
with one field replaced by a planted bug (commit on the leader's copy alone,
a voter hiding its restart, ...) and check that the simulator catches each:
that is how we know the simulator can fail. Nothing else may differ between
the two, so the bug runs through exactly the code the real rule runs through.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from coord.core import commit
from coord.core.messages import VoteReply

__all__ = ["RULES", "Rules"]


@dataclass(frozen=True, slots=True)
class Rules:
    """``commit_candidate`` and ``departed_forgotten``: see :mod:`coord.core.commit`.

    ``vote_reply`` builds every :class:`~coord.core.messages.VoteReply` the node
    sends, and the one it counts for itself, from its keyword fields: the
    voter's statement of its whole state (coord/PROTOCOL.md §8.1).
    """

    commit_candidate: Callable[[int, Mapping[int, int], Collection[int], int, int], int | None] = (
        commit.commit_candidate
    )
    departed_forgotten: Callable[[int, int], bool] = commit.departed_forgotten
    vote_reply: Callable[..., VoteReply] = VoteReply


RULES = Rules()
"""The rules of the protocol, as every real node applies them."""
