"""What the chat layer sees of the coordinator, and nothing more.

``chatnode`` proposes opaque payloads, applies the committed entries it is
handed in log order, and asks for status. Whether one replica or many stand
behind this boundary, and how they elect a leader, is invisible above it: that
is what lets replication replace the single-replica log without touching
``chatnode``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from coord.core.entry import Entry, EntryKind
from coord.core.status import MemberStatus, Status

T = TypeVar("T")

__all__ = [
    "Coordinator",
    "DiskWrites",
    "Entry",
    "EntryKind",
    "LeaderView",
    "MemberStatus",
    "NotLeader",
    "Proposal",
    "StateHooks",
    "Status",
]


@dataclass(frozen=True, slots=True)
class Proposal:
    """Where a proposal landed in the leader's log.

    The entry is only *accepted* at this point; it counts once an entry with the
    same index *and* term shows up in the committed stream. Any other term at
    that index means leadership was lost and the proposal was discarded.
    """

    index: int
    term: int


@dataclass(frozen=True, slots=True)
class LeaderView:
    """Who this node believes leads, as sent to clients in ``LeaderInfo``."""

    leader_id: int
    leader_address: str
    term: int


class NotLeader(Exception):
    """This node cannot take the request; ``leader_address`` is the best hint, or ''."""

    def __init__(self, leader_address: str = "", reason: str = "not the leader") -> None:
        super().__init__(reason)
        self.leader_address = leader_address


class StateHooks(Protocol):
    """What the coordinator needs from the state machine it feeds.

    The log is compacted behind what the state holds durably, so a follower
    that needs a compacted entry gets a copy of the state instead (a snapshot).
    Each call is serialized with applying entries.
    """

    async def checkpoint(self) -> int | None:
        """Make the applied state durable; return its applied index (None: try later)."""

    async def capture(self, path: Path) -> int:
        """Write a consistent copy of the applied state to path; return its applied index."""

    async def restore(self, path: Path) -> int:
        """Replace the state with the copy at path, atomically; return its applied index."""


class Coordinator(Protocol):
    """The boundary of docs/design.md, "Layers and the coordinator boundary"."""

    async def start(self, applied_index: int, hooks: StateHooks) -> None:
        """Open storage, recover, and begin taking part in the cluster.

        applied_index is how far the state machine got before: entries up to it
        are known committed, and ``committed()`` continues after it.
        """

    async def hand_over(self) -> bool:
        """If this node leads, pass leadership to an in-sync follower (before a clean stop);
        True when another node now leads."""

    async def stop(self) -> None:
        """Release everything; call hand_over first for a clean stop."""

    def propose(self, payload: bytes) -> Proposal:
        """Append payload to the leader's log; raises :class:`NotLeader` elsewhere.

        Synchronous on purpose: the caller learns the index before any commit
        can be delivered, so it can wait for its own result without a race.
        """

    def committed(self) -> AsyncIterator[list[Entry]]:
        """Yield committed entries after the applied index given to start, in order, in batches.

        Ends when the coordinator stops.
        """

    async def read_barrier(self) -> int:
        """Return the commit index a linearizable read must see applied.

        Raises :class:`NotLeader` unless this node leads and holds its lease.
        """

    def leader_changes(self) -> AsyncIterator[LeaderView | None]:
        """Yield the current leader view at once, then each change (None: no known leader)."""

    def status(self) -> Status:
        """This node's view of the cluster."""

    def leader_address(self) -> str:
        """The address of the leader this node knows, or '' when it knows none."""

    def wall_clock_agreed(self, wall_ms: int, mono_ms: int) -> bool:
        """Whether this node leads and a majority of the members, itself counted, read
        wall clocks within a second of wall_ms (its own reading at monotonic time
        mono_ms), by its recent heartbeats: when the cluster clock may take this
        node's wall clock for real time (chatnode.cluster_clock, rule 4)."""

    def follower_lags(self) -> dict[int, tuple[int, int]]:
        """On the leader: each follower's lag behind its log, in entries and in ms."""


class DiskWrites(Protocol):
    """Writes that wait out a full disk (the coordinator's own guard, shared with the
    state machine so that both say the same about the disk)."""

    async def write(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """attempt() until it is not refused for a full disk; any other fault ends the
        process (an I/O error leaves nothing in memory to trust)."""
