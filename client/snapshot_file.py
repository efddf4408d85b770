"""The snapshot file ``chatctl snapshot save`` writes and ``status`` and ``restore`` read.

One file, in three parts::

    chat-snapshot 1\\n                 the format's name and version
    {"index": ..., ...}\\n              the header: one line of JSON (SnapshotHeader)
    <size bytes>                        the leader's chat state, a SQLite database
    <32 bytes>                          SHA-256 of everything before it

The header carries what a restore needs besides the state: the index the copy
was taken at, the term of that entry, the cluster config in force there (the
config entry's payload, as text) and the leader's term, which a restored
cluster starts above. The trailing digest covers the header
too, so any damaged or truncated byte is found before a restore reads a page.

A save streams into ``FILE.tmp``, checks the leader's size and digest, writes
its own digest, fsyncs and only then renames to FILE (and fsyncs the folder):
a file named FILE is always whole.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from proto import replication_pb2 as rpb

MAGIC = b"chat-snapshot 1\n"
DIGEST_BYTES = 32
HEADER_MAX_BYTES = 1 << 20  # a config of many members is still a few KiB
READ_BYTES = 1 << 20


class SnapshotFileError(Exception):
    """A file that is not a whole snapshot, or a stream that did not make one: one line."""


@dataclass(frozen=True, slots=True)
class SnapshotHeader:
    """What a snapshot file says of the state it holds."""

    index: int
    term: int  # of the entry at index
    config: str  # the config entry's payload: the cluster's members and mode
    size: int  # bytes of state
    leader: int
    leader_term: int  # the leader's term when it saved: at least every term the state saw
    taken_ms: int


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """A checked snapshot file: its header, its size and its digest."""

    header: SnapshotHeader
    file_size: int
    sha256: str


def is_snapshot_file(path: Path) -> bool:
    """Whether path starts as a snapshot file does (else it may be a plain backup)."""
    with path.open("rb") as file:
        return file.read(len(MAGIC)) == MAGIC


# -- writing --------------------------------------------------------------------------------


def create_exclusive(path: Path) -> bool:
    """Create path empty, owner-only, if nothing is there; False if something is: another
    run holds the name, or an interrupted one left it. Two runs never share a file."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return False
    return True


@contextmanager
def claimed(path: Path) -> Iterator[Path]:
    """Claim ``path.tmp`` for a save into path; it is removed on the way out, so only a
    published (renamed) file remains. SnapshotFileError if either name is taken."""
    if path.exists():
        raise SnapshotFileError(f"{path} exists; choose another name or remove it first")
    partial = path.with_name(path.name + ".tmp")
    if not create_exclusive(partial):
        raise SnapshotFileError(
            f"{partial} exists: another save is running, or one was interrupted (remove it)"
        )
    try:
        yield partial
    finally:
        partial.unlink(missing_ok=True)


async def receive(partial: Path, chunks: AsyncIterator[rpb.SnapshotChunk]) -> SnapshotInfo:
    """Write the leader's stream to partial as a snapshot file, from its start, and fsync it.

    SnapshotFileError unless the stream is whole: as many bytes as its first
    chunk declared, with the SHA-256 its last chunk carries.
    """
    first = await anext(aiter(chunks), None)
    if first is None:
        raise SnapshotFileError("the leader sent an empty snapshot stream")
    if first.index < 1 or not first.HasField("config"):
        raise SnapshotFileError("the leader's first snapshot chunk lacks its index or config")
    header = SnapshotHeader(
        index=first.index,
        term=first.index_term,
        config=first.config.payload.decode(errors="replace"),
        size=first.size,
        leader=first.sender,
        leader_term=first.term,
        taken_ms=int(time.time() * 1000),
    )
    whole = hashlib.sha256()
    with partial.open("wb") as file:
        whole.update(_write(file, MAGIC + _header_line(header)))
        data_digest, last = await _write_data(file, first, chunks, whole)
        if not hmac.compare_digest(data_digest, last.sha256):
            raise SnapshotFileError("the snapshot stream failed its SHA-256 check")
        digest = whole.digest()
        file.write(digest)
        file.flush()
        await asyncio.to_thread(os.fsync, file.fileno())
        return SnapshotInfo(header, file.tell(), digest.hex())


async def _write_data(
    file: BinaryIO,
    first: rpb.SnapshotChunk,
    chunks: AsyncIterator[rpb.SnapshotChunk],
    whole: hashlib._Hash,
) -> tuple[bytes, rpb.SnapshotChunk]:
    """Write the chunks' data, first included; the data's own digest and the last chunk."""
    data_digest = hashlib.sha256()
    written = 0
    chunk: rpb.SnapshotChunk | None = first
    while chunk is not None:
        written += len(chunk.data)
        if written > first.size:
            raise SnapshotFileError(f"the snapshot is larger than the {first.size} bytes declared")
        data_digest.update(chunk.data)
        whole.update(_write(file, chunk.data))
        if chunk.last:
            break
        chunk = await anext(aiter(chunks), None)
    if chunk is None or written != first.size:
        raise SnapshotFileError("the snapshot stream broke off")
    return data_digest.digest(), chunk


def _write(file: BinaryIO, data: bytes) -> bytes:
    file.write(data)
    return data


def _header_line(header: SnapshotHeader) -> bytes:
    return json.dumps(asdict(header), sort_keys=True).encode() + b"\n"


def publish(partial: Path, path: Path) -> None:
    """Give the whole, fsynced file its name, durably; never over an existing file."""
    if path.exists():
        raise SnapshotFileError(f"{path} appeared while the save ran; nothing was replaced")
    partial.rename(path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


# -- reading --------------------------------------------------------------------------------


def check(path: Path) -> SnapshotInfo:
    """Read a snapshot file whole and check its digest: what it holds, or SnapshotFileError."""
    return _read(path, None)


def extract(path: Path, target: Path) -> SnapshotInfo:
    """Check path whole while writing its state to target (a SQLite file for restore)."""
    with target.open("wb") as out:
        return _read(path, out)


def _read(path: Path, out: BinaryIO | None) -> SnapshotInfo:
    try:
        with path.open("rb") as file:
            return _read_open(path, file, out)
    except OSError as exc:
        raise SnapshotFileError(f"cannot read {path}: {exc.strerror or exc}") from None


def _read_open(path: Path, file: BinaryIO, out: BinaryIO | None) -> SnapshotInfo:
    file_size = os.fstat(file.fileno()).st_size
    whole = hashlib.sha256()
    magic = file.read(len(MAGIC))
    if magic != MAGIC:
        raise SnapshotFileError(f"{path} is not a chat snapshot file")
    line = file.readline(HEADER_MAX_BYTES)
    whole.update(magic + line)
    header = _parse_header(path, line)
    expected = len(magic) + len(line) + header.size + DIGEST_BYTES
    if file_size != expected:
        raise SnapshotFileError(
            f"{path} is damaged: {file_size} bytes where its header says {expected}"
        )
    left = header.size
    while left:
        data = file.read(min(READ_BYTES, left))
        if not data:
            raise SnapshotFileError(f"{path} is damaged: it ends inside the state")
        left -= len(data)
        whole.update(data)
        if out is not None:
            out.write(data)
    if not hmac.compare_digest(file.read(DIGEST_BYTES), whole.digest()):
        raise SnapshotFileError(f"{path} is damaged: it fails its SHA-256 check")
    return SnapshotInfo(header, file_size, whole.hexdigest())


def _parse_header(path: Path, line: bytes) -> SnapshotHeader:
    """The header line's fields, each of its type and in range; SnapshotFileError if not."""
    try:
        fields = json.loads(line)
        header = SnapshotHeader(**fields)
    except (ValueError, TypeError):
        raise SnapshotFileError(f"{path} is damaged: its header does not parse") from None
    numbers = [value for name, value in asdict(header).items() if name != "config"]
    if not all(type(n) is int and n >= 0 for n in numbers) or not isinstance(header.config, str):
        raise SnapshotFileError(f"{path} is damaged: its header holds bad values")
    return header


def describe(info: SnapshotInfo) -> str:
    """``chatctl snapshot status``: one field a line, as etcdctl prints a snapshot's."""
    header = info.header
    taken = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(header.taken_ms / 1000))
    return "\n".join(
        [
            f"index   {header.index}",
            f"term    {header.term}",
            f"size    {info.file_size} bytes ({header.size} of state)",
            f"sha256  {info.sha256}",
            f"leader  node {header.leader} in term {header.leader_term}, saved {taken}",
        ]
    )
