"""Streaming the leader's applied state to an operator (``chatctl snapshot save``).

The copy is the one a follower behind the compacted log gets
(:mod:`coord.shell.snapshots`): the state machine captures it over a read-only
connection of its own, in a thread, without the state lock, so the leader goes
on applying entries and answering every call while the copy is taken and sent.
Each save holds a file the size of the state on the node's disk until its
stream ends, so a node streams one save at a time and refuses a second one.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path

from coord.shell import snapshots
from proto import replication_pb2 as rpb

SAVE_NAME = "snapshot-save.db"


class SaveBusy(Exception):
    """Another operator's save is streaming from this node now."""


class OperatorSaves:
    """One node's snapshot saves: a capture per call, one call at a time."""

    def __init__(
        self, folder: Path, capture: Callable[[Path, int], Awaitable[snapshots.Offer]]
    ) -> None:
        self._path = folder / SAVE_NAME
        self._capture = capture
        self._busy = False

    def stream(self, term: int) -> AsyncGenerator[rpb.SnapshotChunk, None]:
        """The state as snapshot chunks offered in term; SaveBusy at once while another
        save streams. The copy's file is removed, and the next save admitted, when the
        generator is closed: the caller closes it however the stream ends."""
        if self._busy:
            raise SaveBusy("another snapshot save is streaming from this node; retry after it")
        self._busy = True
        return self._chunks(term)

    async def _chunks(self, term: int) -> AsyncGenerator[rpb.SnapshotChunk, None]:
        try:
            offer = await self._capture(self._path, term)
            for chunk in snapshots.chunks(self._path, offer):
                yield chunk
        finally:
            self._path.unlink(missing_ok=True)
            self._busy = False
