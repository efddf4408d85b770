"""Exceptions of the protocol core, named for whose fault they are (as h11 does).

* :class:`Redirect` -- nobody's fault: this node cannot take the request now;
  the caller should go to node ``leader_id`` (0 when unknown). The shell turns
  the id into an address (:class:`coord.boundary.NotLeader`).
* :class:`LocalProtocolError` -- the caller (the shell, an operator command)
  asked for something the protocol forbids in this state.
* :class:`RemoteProtocolError` -- a peer sent something no correct peer sends;
  it points at a bug or a broken safety assumption on the other side.
"""

from __future__ import annotations


class CoordError(Exception):
    """Base class of everything the core raises on purpose."""


class Redirect(CoordError):
    """This node is not the leader (or not yet able to serve as one): go to ``leader_id``."""

    def __init__(self, leader_id: int, reason: str = "not the leader") -> None:
        super().__init__(reason)
        self.leader_id = leader_id


class LocalProtocolError(CoordError):
    """The caller drove the core wrongly: a bug or a refused operator request."""


class ChangeInFlight(LocalProtocolError):
    """An earlier membership change is not committed yet. Unlike other refusals this one
    passes by itself within a round trip or so, so the same request may be retried."""


class RemoteProtocolError(CoordError):
    """A peer broke the protocol; the input was not applied."""
