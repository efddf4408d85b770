"""Staging a snapshot stream (coord/shell/snapshots.py): only whole, as-sent copies get staged.

The receiving side checks who sends and how much before writing a byte, keeps
each sender's stream in its own file, and checks the size and SHA-256 before
the copy is renamed to where an install would read it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from coord.core.config import ClusterConfig, config_entry
from coord.shell import snapshots
from proto import replication_pb2 as rpb

CONFIG = config_entry(1, 0, ClusterConfig.create({1: "a:1", 2: "b:2"}))


def offer(sender: int = 1, index: int = 40) -> snapshots.Offer:
    return snapshots.Offer(term=3, sender=sender, index=index, index_term=3, config=CONFIG)


def source(folder: Path, size: int = 3 * snapshots.CHUNK_BYTES + 5) -> Path:
    path = folder / "source.db"
    path.write_bytes(bytes(i % 251 for i in range(size)))
    return path


async def stream(chunks: Iterable[rpb.SnapshotChunk]) -> AsyncIterator[rpb.SnapshotChunk]:
    for chunk in chunks:
        await asyncio.sleep(0)
        yield chunk


def admit_all(_offer: snapshots.Offer, _size: int) -> None:
    return None


async def receive(folder: Path, chunks: Iterable[rpb.SnapshotChunk]) -> snapshots.Offer:
    return await snapshots.receive(stream(chunks), folder, admit_all, set())


def staged(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("snapshot-*"))


def incoming(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.incoming"))


async def test_a_whole_copy_is_staged_byte_for_byte(tmp_path: Path) -> None:
    path = source(tmp_path)
    got = await receive(tmp_path, snapshots.chunks(path, offer()))
    assert got == offer()
    assert snapshots.staged_path(tmp_path, 40).read_bytes() == path.read_bytes()
    assert staged(tmp_path) == ["snapshot-40.staged"]


async def test_a_changed_byte_fails_the_digest_and_stages_nothing(tmp_path: Path) -> None:
    chunks = list(snapshots.chunks(source(tmp_path), offer()))
    chunks[1].data = b"!" + chunks[1].data[1:]
    with pytest.raises(snapshots.SnapshotRefused, match="SHA-256"):
        await receive(tmp_path, chunks)
    assert staged(tmp_path) == []


@pytest.mark.parametrize("change", ["more data", "less data", "no end"])
async def test_a_copy_of_another_size_than_declared_stages_nothing(
    tmp_path: Path, change: str
) -> None:
    chunks = list(snapshots.chunks(source(tmp_path), offer()))
    if change == "more data":
        chunks[-1].data += b"extra"
    elif change == "less data":
        chunks[0].size += 1
    else:
        chunks = chunks[:-1]
    with pytest.raises(snapshots.SnapshotRefused):
        await receive(tmp_path, chunks)
    assert staged(tmp_path) == []


async def test_admit_sees_the_offer_before_anything_is_written(tmp_path: Path) -> None:
    seen: list[tuple[snapshots.Offer, int]] = []

    def refuse(got: snapshots.Offer, size: int) -> None:
        seen.append((got, size))
        raise snapshots.SnapshotRefused("not from our leader")

    path = source(tmp_path)
    with pytest.raises(snapshots.SnapshotRefused, match="not from our leader"):
        await snapshots.receive(stream(snapshots.chunks(path, offer())), tmp_path, refuse, set())
    assert seen == [(offer(), path.stat().st_size)]
    assert staged(tmp_path) == []


async def test_one_stream_per_sender_and_senders_never_share_a_file(tmp_path: Path) -> None:
    path = source(tmp_path)
    receiving: set[int] = set()
    gate = asyncio.Event()
    writing = {1: asyncio.Event(), 2: asyncio.Event()}

    async def held(sender: int, index: int) -> AsyncIterator[rpb.SnapshotChunk]:
        """The copy, held back after its first chunk until the gate opens."""
        for position, chunk in enumerate(snapshots.chunks(path, offer(sender, index))):
            if position == 1:
                writing[sender].set()
                await gate.wait()
            yield chunk

    def receive_from(sender: int, index: int) -> asyncio.Task[snapshots.Offer]:
        return asyncio.create_task(
            snapshots.receive(held(sender, index), tmp_path, admit_all, receiving)
        )

    first, other = receive_from(1, 40), receive_from(2, 41)
    async with asyncio.timeout(5):
        await asyncio.gather(writing[1].wait(), writing[2].wait())
    assert receiving == {1, 2}
    assert incoming(tmp_path) == ["snapshot-from-1.incoming", "snapshot-from-2.incoming"]
    with pytest.raises(snapshots.SnapshotRefused, match="already arriving"):
        await snapshots.receive(
            stream(snapshots.chunks(path, offer(1, 42))), tmp_path, admit_all, receiving
        )
    gate.set()
    assert (await first).index == 40 and (await other).index == 41
    assert staged(tmp_path) == ["snapshot-40.staged", "snapshot-41.staged"]
    assert receiving == set() and incoming(tmp_path) == []


async def test_a_config_entry_of_an_unknown_kind_is_refused(tmp_path: Path) -> None:
    chunks = list(snapshots.chunks(source(tmp_path), offer()))
    chunks[0].config.kind = 99
    with pytest.raises(snapshots.SnapshotRefused, match="bad config entry"):
        await receive(tmp_path, chunks)
