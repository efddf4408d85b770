"""When each message of a :class:`~coord.core.ready.Ready` may leave: before or after its fsync.

One pure rule shared by the production shell (:mod:`coord.shell.driver`) and the
simulated one (:mod:`coord.testing.sim`), so the simulator checks the order that runs
in production rather than a copy of it.

The rule (etcd raft's, Raft thesis section 10.2.1): a leader's ``Append``
messages may leave *before* the leader's own fsync of that Ready. A follower
may then hold entries the leader never made durable, which is safe because
nothing counts them as committed until the leader's own ``persisted`` is in
(the commit rule reads the leader's ``stable_last``). Every other message
leaves only *after* the fsync: votes granted and acks promise what the Ready
wrote, and a candidate's vote request carries a term it must have persisted.

Except when the Ready changes the hard state (a new term, a vote): then
nothing leaves early. An Append carrying a term that is not
yet on disk could be taken by followers from a leader that then crashes,
restarts in the older term, and votes for another candidate of that term.

``leading`` is whether the node leads when the shell carries the Ready out
(``node.role is Role.LEADER`` at that moment), as the production shell reads
it.
"""

from __future__ import annotations

from coord.core.messages import Append, Message
from coord.core.ready import Ready

Outgoing = list[tuple[int, Message]]


def leaves_early(msg: Message, leading: bool) -> bool:
    """Whether ``msg`` may leave before the fsync of the Ready that carries it."""
    return leading and isinstance(msg, Append)


def split_messages(ready: Ready, leading: bool) -> tuple[Outgoing, Outgoing]:
    """``(early, later)``: send ``early`` before persisting ``ready``, ``later`` after.

    The relative order of the messages within each part is kept.
    """
    early: Outgoing = []
    later: Outgoing = []
    term_first = ready.hard_state is not None
    for to, msg in ready.messages:
        (early if not term_first and leaves_early(msg, leading) else later).append((to, msg))
    return early, later
