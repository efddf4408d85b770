"""Nodes with one rule broken on purpose: the simulator must catch each.

A planted bug is a :class:`~coord.core.node.Node` whose one rule is swapped for a
wrong one while the rest runs exactly the code a real node runs; the simulator's
tests pass it as the node factory and expect a violation, which is how we know
the simulator can fail. The swap lives here, in the harness: the product has no
parameter for it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import Any
from unittest import mock

from coord.core import commit
from coord.core.messages import VoteReply
from coord.core.node import Node

__all__ = ["CommitsWithoutTheIsr", "ForgetsTheRemoved", "VouchesAfterRestart"]


class CommitsWithoutTheIsr(Node):
    """Planted bug: an entry counts as committed once the leader alone has it."""

    def _maybe_commit(self) -> None:
        def leader_alone(
            matches: Mapping[int, int], required: Collection[int], *rest: int
        ) -> int | None:
            return matches[self.id]

        with mock.patch.object(commit, "commit_candidate", leader_alone):
            super()._maybe_commit()


class ForgetsTheRemoved(Node):
    """Planted bug: a removed member's progress goes at once, so it never hears of its
    removal and may later win alone on a stale view."""

    def _maybe_commit(self) -> None:
        with mock.patch.object(commit, "departed_forgotten", lambda epoch, index: True):
            super()._maybe_commit()


class VouchesAfterRestart(Node):
    """Planted bug: a restarted voter claims it never restarted."""

    def _vote_reply(self, *args: Any, **kwargs: Any) -> VoteReply:
        return dataclasses.replace(super()._vote_reply(*args, **kwargs), restarted=False)
