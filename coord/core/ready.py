"""What the core hands the shell after its inputs: one frozen :class:`Ready` at a time.

The shell's loop, for each ``Ready`` from :meth:`coord.core.node.Node.ready`, strictly
in the order they were handed out:

1. ``install_snapshot``: move the staged snapshot into place (temp file, fsync,
   rename) and reset the stored log to start after it;
2. ``hard_state`` and ``entries``: write them durably in one transaction
   (delete every stored entry with index >= ``entries[0].index`` first: that is
   how a conflicting suffix is truncated), fsync, then call
   ``node.persisted(entries[-1].index, entries[-1].term, now)``, and (for any
   Ready whose ``must_sync()`` is true) ``node.synced(ready, now)``: a write
   slower than ``stall_ms`` counts as a stall, and a candidate's voters'
   silence counts from here;
3. ``messages``: only now send them. Votes granted and acks promise that the
   above is on disk; a message must never leave before the Ready it came in,
   and every Ready before it, is durable;
4. ``snapshots``: start streaming a snapshot to each of those peers;
5. ``committed``: apply these in order; ``soft_state``: publish the change;
   ``elections``: log them (the ballots this node decided, and why).

The core's promise behind the one exception shells make (a leader's Appends
may leave before the leader's own fsync of their Ready): no Append of term T
is in a Ready before the one carrying the hard state of term T. When both are
in the same Ready, ``hard_state`` is set and nothing of it may leave early.
"""

from __future__ import annotations

from dataclasses import dataclass

from coord.core.entry import Entry
from coord.core.log import HardState, SnapshotMeta
from coord.core.messages import Message


@dataclass(frozen=True, slots=True)
class SoftState:
    """Who leads, as this node sees it; published to clients, never persisted."""

    role: str
    leader_id: int
    term: int


@dataclass(frozen=True, slots=True)
class SnapshotOrder:
    """Stream a snapshot of the applied state to ``to``, as leader of ``term``."""

    to: int
    term: int


@dataclass(frozen=True, slots=True)
class ElectionResult:
    """A ballot this node decided: its (pre-)vote for ``term`` was won or lost, and why.

    ``reason`` is :attr:`coord.core.election.Decision.reason`: the election rule's
    own account (which grants, which ISR*, who refused), for traces and logs.
    """

    pre_vote: bool
    term: int
    won: bool
    reason: str

    def __str__(self) -> str:
        kind = "pre-vote" if self.pre_vote else "vote"
        return f"{kind} for t{self.term} {'won' if self.won else 'lost'}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Ready:
    hard_state: HardState | None = None
    install_snapshot: SnapshotMeta | None = None
    entries: tuple[Entry, ...] = ()
    messages: tuple[tuple[int, Message], ...] = ()
    snapshots: tuple[SnapshotOrder, ...] = ()
    committed: tuple[Entry, ...] = ()
    soft_state: SoftState | None = None
    elections: tuple[ElectionResult, ...] = ()
    seq: int = 0  # hand-out order; :meth:`coord.core.node.Node.synced` names the Ready by it

    def must_sync(self) -> bool:
        """Whether step 2 has anything to write."""
        return self.hard_state is not None or bool(self.entries)
