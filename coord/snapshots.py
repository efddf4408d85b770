"""Moving a snapshot (a copy of the leader's applied state) to a follower, durably.

The leader streams the copy in chunks; the follower writes it to a temporary
file, fsyncs it and renames it to a name that carries the snapshot's index,
then fsyncs the folder. Only then does the core hear of it, so a snapshot the
core decides to install is always whole on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from coord import codec
from coord.boundary import Entry
from proto import replication_pb2 as rpb

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Offer:
    """What the leader says about the copy it sends (the first chunk carries it)."""

    term: int
    sender: int
    index: int
    index_term: int
    config: Entry


def staged_path(folder: Path, index: int) -> Path:
    return folder / f"snapshot-{index}.staged"


def chunks(path: Path, offer: Offer) -> Iterator[rpb.SnapshotChunk]:
    """The copy at path as stream messages; metadata in the first, `last` set on the final one."""
    size = path.stat().st_size
    with path.open("rb") as source:
        sent = 0
        while True:
            data = source.read(CHUNK_BYTES)
            sent += len(data)
            chunk = rpb.SnapshotChunk(data=data, last=sent >= size)
            if sent == len(data):
                chunk.term, chunk.sender = offer.term, offer.sender
                chunk.index, chunk.index_term = offer.index, offer.index_term
                chunk.config.CopyFrom(codec.entry_to_pb(offer.config))
            yield chunk
            if chunk.last:
                return


async def receive(stream: AsyncIterator[rpb.SnapshotChunk], folder: Path) -> Offer | None:
    """Stage an incoming copy durably; return its offer, or None if the stream broke off."""
    first: rpb.SnapshotChunk | None = None
    incoming = folder / "snapshot.incoming"
    with incoming.open("wb") as target:
        async for chunk in stream:
            first = first or chunk
            target.write(chunk.data)
            if chunk.last:
                break
        else:
            return None
        target.flush()
        await asyncio.to_thread(os.fsync, target.fileno())
    assert first is not None
    offer = Offer(
        first.term,
        first.sender,
        first.index,
        first.index_term,
        codec.entry_from_pb(first.config),
    )
    incoming.rename(staged_path(folder, offer.index))
    await asyncio.to_thread(fsync_folder, folder)
    return offer


def fsync_folder(folder: Path) -> None:
    """Make renames in folder durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def discard_staged(folder: Path, keep: int | None = None) -> None:
    """Remove staged copies (all, or all but the one at index keep)."""
    for path in folder.glob("snapshot-*.staged"):
        if keep is None or path != staged_path(folder, keep):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
