"""Moving a snapshot (a copy of the leader's applied state) to a follower, durably.

The leader streams the copy in chunks; the follower checks who sends it and
how big it says it is, writes it to a file of that sender's own, checks its
size and SHA-256, fsyncs it and renames it to a name that carries the
snapshot's index, then fsyncs the folder. Only then does the core hear of it,
so a snapshot the core decides to install is always whole and as sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from coord.core.entry import Entry
from coord.shell import codec
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
    """The copy at path as stream messages: metadata and size first, the digest last."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as source:
        sent = 0
        while True:
            data = source.read(CHUNK_BYTES)
            digest.update(data)
            sent += len(data)
            chunk = rpb.SnapshotChunk(data=data, last=sent >= size)
            if sent == len(data):
                chunk.term, chunk.sender = offer.term, offer.sender
                chunk.index, chunk.index_term = offer.index, offer.index_term
                chunk.config.CopyFrom(codec.entry_to_pb(offer.config))
                chunk.size = size
            if chunk.last:
                chunk.sha256 = digest.digest()
            yield chunk
            if chunk.last:
                return


class SnapshotRefused(Exception):
    """The stream was not staged: why, in one line (nothing was installed)."""


def offer_of(first: rpb.SnapshotChunk) -> Offer:
    """The metadata of a copy, from its first chunk; SnapshotRefused if it does not decode."""
    try:
        config = codec.entry_from_pb(first.config)
    except ValueError as exc:
        raise SnapshotRefused(f"snapshot carries a bad config entry: {exc}") from None
    return Offer(first.term, first.sender, first.index, first.index_term, config)


async def receive(
    stream: AsyncIterator[rpb.SnapshotChunk],
    folder: Path,
    admit: Callable[[Offer, int], None],
    receiving: set[int],
) -> Offer:
    """Stage an incoming copy durably and return its offer.

    ``admit(offer, size)`` sees the metadata before a byte is written and
    raises SnapshotRefused to turn the stream away. Each sender stages into
    its own file, one stream at a time (``receiving`` holds the senders
    streaming now), so two leaders' copies never mix. The digest and size are
    checked before the copy gets its staged name.
    """
    first = await anext(aiter(stream), None)
    if first is None:
        raise SnapshotRefused("empty snapshot stream")
    offer = offer_of(first)
    admit(offer, first.size)
    if offer.sender in receiving:
        raise SnapshotRefused(f"a snapshot from node {offer.sender} is already arriving")
    receiving.add(offer.sender)
    incoming = folder / f"snapshot-from-{offer.sender}.incoming"
    try:
        await _write_checked(first, stream, incoming)
        incoming.rename(staged_path(folder, offer.index))
        await asyncio.to_thread(fsync_folder, folder)
    finally:
        receiving.discard(offer.sender)
        incoming.unlink(missing_ok=True)
    return offer


async def _write_checked(
    first: rpb.SnapshotChunk, stream: AsyncIterator[rpb.SnapshotChunk], target_path: Path
) -> None:
    """Write chunks to target_path and fsync it; SnapshotRefused unless size and digest match."""
    digest = hashlib.sha256()
    written = 0
    chunk: rpb.SnapshotChunk | None = first
    with target_path.open("wb") as target:
        while chunk is not None:
            written += len(chunk.data)
            if written > first.size:
                raise SnapshotRefused(f"snapshot is larger than the {first.size} bytes it declared")
            digest.update(chunk.data)
            target.write(chunk.data)
            if chunk.last:
                break
            chunk = await anext(aiter(stream), None)
        if chunk is None:
            raise SnapshotRefused("snapshot stream broke off")
        if written != first.size or not hmac.compare_digest(digest.digest(), chunk.sha256):
            raise SnapshotRefused("snapshot failed its size or SHA-256 check")
        target.flush()
        await asyncio.to_thread(os.fsync, target.fileno())


def fsync_folder(folder: Path) -> None:
    """Make renames in folder durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def discard_staged(folder: Path) -> None:
    """Remove every staged copy (at start, once any pending install is complete)."""
    for path in folder.glob("snapshot-*.staged"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
