"""``chatctl backup`` and ``chatctl restore``: a node's chat state to one file and back.

A backup is a consistent copy of a node's ``state.db`` (its applied index is in
the copy's ``meta`` table) plus one row, ``backup_origin``, saying which term
and cluster config the node had when the copy was taken. A restore turns it
into the data dir of the only member of a *new* cluster, laid out exactly as a
follower's is after it installed a leader's snapshot (coord/shell/log_store.py,
coord/shell/snapshots.py): a log that starts after the backup's index, under a
single-member config, with the state restored from a staged copy.

Restore also takes a snapshot file (``chatctl snapshot save``,
client/snapshot_file.py): its state is unpacked into a scratch folder while
the file is checked against its digest, and its header stands in for the
origin row.

Unlike the rest of ``client``, this module imports server code (``coord`` and
``chatnode``): it works on a node's files, on the node's machine, with no
cluster connection, and must write them exactly as the node itself would.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from chatnode.state import ChatState
from client import snapshot_file
from coord.core.config import ClusterConfig, config_entry
from coord.core.errors import CoordError
from coord.core.log import HardState, SnapshotMeta
from coord.shell.log_store import LogStore
from coord.shell.snapshots import fsync_folder, staged_path

PAGES_PER_STEP = 256  # 1 MiB of 4 KiB pages per backup step
STEP_PAUSE_S = 0.002  # between steps, so the copy never hogs the disk the node fsyncs on
ORIGIN_TABLE = "backup_origin"
STATE_TABLES = frozenset({"meta", "accounts", "sessions", "messages", "request_results"})
_STAGING_NAME = "restore.incoming"
_RESTORE_FILES = ("log.db", "state.db", _STAGING_NAME)  # plus -wal/-shm and the staged copy


class BackupError(Exception):
    """An expected failure, in one line; nothing was left half-written."""


@dataclass(frozen=True, slots=True)
class Origin:
    """What the node that was backed up knew of its cluster when the copy was taken."""

    term: int
    config: ClusterConfig | None
    taken_ms: int


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """What a verified backup holds."""

    applied_index: int
    accounts: int
    messages: int
    origin: Origin | None  # None for a plain copy of a state.db, made without chatctl


# -- backup -------------------------------------------------------------------------------


def backup(data_dir: Path, target: Path) -> str:
    """Copy data_dir's chat state to target while the node runs; one line saying what it holds.

    The copy is written to ``target.partial``, verified, fsynced and only then
    renamed to target (and the folder fsynced), so a file named target is
    always a whole, checked backup.
    """
    state_path, log_path = _node_files(data_dir)
    if target.exists():
        raise BackupError(f"{target} exists; choose another name or remove it first")
    partial = target.with_name(target.name + ".partial")
    _create_exclusive(partial)
    try:
        copy_state(state_path, partial)
        origin = node_origin(log_path)
        _record_origin(partial, origin)
        info = check_backup(partial)
        _fsync_file(partial)
        if target.exists():
            raise BackupError(f"{target} appeared while the backup ran; nothing was replaced")
        partial.rename(target)
        fsync_folder(target.parent)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot back up {data_dir}: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return (
        f"backed up {state_path} to {target}: applied index {info.applied_index} "
        f"(term {origin.term}{_cluster_words(origin.config)}), {info.accounts} accounts, "
        f"{info.messages} messages"
    )


def _node_files(data_dir: Path) -> tuple[Path, Path]:
    """The state and log of a node's data dir; BackupError if either is missing."""
    state_path, log_path = data_dir / "state.db", data_dir / "log.db"
    for path in (state_path, log_path):
        if not path.is_file():
            raise BackupError(f"{path} does not exist: is {data_dir} a node's data dir?")
    return state_path, log_path


def _create_exclusive(path: Path) -> None:
    """Claim path (an empty file is an empty SQLite database), so two backups never share it."""
    if not snapshot_file.create_exclusive(path):
        raise BackupError(
            f"{path} exists: another backup is running, or one was interrupted (remove it)"
        )


def copy_state(source: Path, target: Path) -> None:
    """Copy a live state database with SQLite's online backup API, in steps of pages.

    The copy runs inside one read transaction on the source, so every step
    reads the same moment of the database: the copy is consistent and never
    restarts, however fast the node writes. In WAL mode a reader blocks no
    writer; the node's checkpoints only wait (the WAL grows) until it ends.
    """
    with (
        closing(sqlite3.connect(source, isolation_level=None)) as src,
        closing(sqlite3.connect(target, isolation_level=None)) as dst,
    ):
        src.execute("BEGIN")
        src.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the moment is now
        src.backup(dst, pages=PAGES_PER_STEP, progress=lambda *_: time.sleep(STEP_PAUSE_S))
        src.execute("COMMIT")
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, as snapshots are


def node_origin(log_path: Path) -> Origin:
    """The node's term and latest config, read from its log after the state was copied.

    A node's term is at least the term of every entry it holds, the backup's
    last applied entry included; restore starts the new cluster above it.
    """
    store = LogStore(log_path)  # opening it takes no lock: the node keeps writing
    try:
        term = max(store.hard_state().term, store.term(store.last_index()))
        entry = store.last_config(store.first_index(), store.last_index())
        entry = entry or store.snapshot().config
    finally:
        store.close()
    config = None
    if entry is not None:
        try:
            config = ClusterConfig.decode(entry.payload)
        except CoordError:
            config = None  # recorded as unknown; restore then asks for --mode
    return Origin(term, config, int(time.time() * 1000))


def _record_origin(path: Path, origin: Origin) -> None:
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute(
            f"CREATE TABLE {ORIGIN_TABLE}"
            " (term INTEGER NOT NULL, config TEXT NOT NULL, taken_ms INTEGER NOT NULL)"
        )
        config = origin.config.encode().decode() if origin.config else ""
        db.execute(
            f"INSERT INTO {ORIGIN_TABLE} VALUES (?, ?, ?)", (origin.term, config, origin.taken_ms)
        )


def _cluster_words(config: ClusterConfig | None) -> str:
    if config is None:
        return ", cluster config unknown"
    return f", {config.mode} cluster of {len(config.members)}"


# -- verifying ----------------------------------------------------------------------------


def check_backup(path: Path) -> BackupInfo:
    """Open a backup read-only and check it whole; what it holds, or BackupError saying why not.

    ``PRAGMA integrity_check`` reads every page, so a truncated or damaged
    file is found here, before a restore changes anything.
    """
    if not path.is_file():
        raise BackupError(f"{path} does not exist")
    try:
        with closing(_open_read_only(path)) as db:
            problems = [row[0] for row in db.execute("PRAGMA integrity_check")]
            if problems != ["ok"]:
                raise BackupError(f"{path} is damaged: {problems[0]}")
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            if missing := sorted(STATE_TABLES - tables):
                raise BackupError(f"{path} is not a chat state backup (no {', '.join(missing)})")
            applied = db.execute("SELECT value FROM meta WHERE key = 'applied_index'").fetchone()
            accounts = db.execute("SELECT count(*) FROM accounts").fetchone()[0]
            messages = db.execute("SELECT count(*) FROM messages").fetchone()[0]
            origin = _read_origin(db) if ORIGIN_TABLE in tables else None
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path} is not a usable backup: {exc}") from None
    if applied is None:
        raise BackupError(f"{path} is not a chat state backup (no applied index)")
    return BackupInfo(applied[0], accounts, messages, origin)


def _open_read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)


def _read_origin(db: sqlite3.Connection) -> Origin | None:
    row = db.execute(f"SELECT term, config, taken_ms FROM {ORIGIN_TABLE}").fetchone()
    if row is None:
        return None
    term, payload, taken_ms = row
    try:
        config = ClusterConfig.decode(payload.encode()) if payload else None
    except CoordError:
        config = None
    return Origin(term, config, taken_ms)


# -- restore ------------------------------------------------------------------------------


def restore(backup_file: Path, data_dir: Path, node_id: int, address: str, mode: str | None) -> str:
    """Make data_dir the data of node_id, the only member of a new cluster holding the backup.

    Lines saying what was done and how to start the node. The backup is
    checked whole before the node's files are written; if anything fails,
    whatever was written is removed again.
    """
    try:
        with _fresh_dir(data_dir), readable(backup_file, data_dir) as (state_file, info):
            config, term = _new_cluster(backup_file, info, node_id, address, mode)
            install(state_file, data_dir, info.applied_index, term, config)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot restore into {data_dir}: {exc}") from None
    return "\n".join(
        [
            f"restored {backup_file} into {data_dir}: node {node_id} ({address}) alone in a new "
            f"{config.mode} cluster at index {info.applied_index} (term {term}), {info.accounts} "
            f"accounts, {info.messages} messages{_mode_note(info.origin, config)}",
            f"next: chatnode --id {node_id} --cluster {node_id}={address} --data-dir {data_dir} "
            "--min-insync 1 --cluster-secret-file FILE; then for each other machine, with its "
            "old data dir moved aside: chatctl add-member ID HOST:PORT and start it with --join",
        ]
    )


def _new_cluster(
    backup_file: Path, info: BackupInfo, node_id: int, address: str, mode: str | None
) -> tuple[ClusterConfig, int]:
    """The restored node's one-member config and first term, or BackupError saying why not."""
    if info.applied_index < 1:
        raise BackupError(f"{backup_file} holds no applied entries: start a new cluster instead")
    origin = info.origin
    mode = mode or (origin.config.mode if origin and origin.config else None)
    if mode is None:
        raise BackupError(
            f"{backup_file} does not say which mode its cluster ran in: "
            "pass --mode fail-stop or --mode quorum"
        )
    try:
        config = ClusterConfig.create({node_id: address}, min_insync=1, quorum=mode == "quorum")
    except CoordError as exc:
        raise BackupError(f"node {node_id} at {address}: {exc}") from None
    return config, (origin.term if origin else 0) + 1


@contextmanager
def readable(backup_file: Path, scratch: Path) -> Iterator[tuple[Path, BackupInfo]]:
    """The backup as a state database to read, and what it holds, checked whole.

    A backup made by ``chatctl backup`` is that database itself. A snapshot
    file is checked against its digest while its state is unpacked into a
    folder made in scratch (the data dir being restored, which the node's
    user can write) and removed afterwards; the header gives the origin.
    """
    if not backup_file.is_file() or not snapshot_file.is_snapshot_file(backup_file):
        yield backup_file, check_backup(backup_file)
        return
    with tempfile.TemporaryDirectory(prefix=".chat-restore-", dir=scratch) as folder:
        state_file = Path(folder) / "state.db"
        try:
            header = snapshot_file.extract(backup_file, state_file).header
        except snapshot_file.SnapshotFileError as exc:
            raise BackupError(str(exc)) from None
        info = check_backup(state_file)
        if info.applied_index != header.index:
            raise BackupError(
                f"{backup_file} says index {header.index} but its state is at {info.applied_index}"
            )
        yield state_file, replace(info, origin=_snapshot_origin(header))


def _snapshot_origin(header: snapshot_file.SnapshotHeader) -> Origin:
    try:
        config = ClusterConfig.decode(header.config.encode())
    except CoordError:
        config = None  # as for a backup: restore then asks for --mode
    return Origin(header.leader_term, config, header.taken_ms)


def install(
    backup_file: Path, data_dir: Path, index: int, term: int, config: ClusterConfig
) -> None:
    """Lay out data_dir as a node that installed a snapshot at index, by the node's own path.

    The steps are the follower's (coord/shell/driver.py): stage the copy under
    its snapshot name, then one log transaction that starts the log after
    index under the new config and marks the restore pending, then
    ChatState.restore_from, then clear the mark. A crash after the log
    transaction leaves a dir the node finishes restoring by itself when it
    starts.
    """
    staged = _stage(backup_file, data_dir, index)
    snapshot = SnapshotMeta(index, term, config_entry(index, term, config))
    store = LogStore(data_dir / "log.db")
    try:
        store.save(HardState(term), snapshot, (), restore_pending=True)
        with ChatState(data_dir / "state.db") as state:
            applied = state.restore_from(staged)
        if applied != index:
            raise BackupError(f"the restored state is at index {applied}, not {index}")
        store.restored()
    finally:
        store.close()
    staged.unlink()
    fsync_folder(data_dir)


def _stage(backup_file: Path, data_dir: Path, index: int) -> Path:
    """Copy the backup, without its origin row, to where the node looks for a staged
    snapshot at index; durably, as a received snapshot is staged."""
    incoming = data_dir / _STAGING_NAME
    with (
        closing(_open_read_only(backup_file)) as src,
        closing(sqlite3.connect(incoming, isolation_level=None)) as dst,
    ):
        src.backup(dst)
        dst.execute(f"DROP TABLE IF EXISTS {ORIGIN_TABLE}")
        dst.execute("PRAGMA journal_mode=DELETE")
    _fsync_file(incoming)
    staged = staged_path(data_dir, index)
    incoming.rename(staged)
    fsync_folder(data_dir)
    return staged


@contextmanager
def _fresh_dir(data_dir: Path) -> Iterator[None]:
    """Run a restore into data_dir, which must be empty or absent; undo it if it fails.

    A restored node is a new cluster: it must never start from, or mix with,
    an old node's files, so a dir holding anything is refused.
    """
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise BackupError(
            f"{data_dir} is not empty: restore writes a fresh data dir (move the old one aside)"
        )
    created = not data_dir.exists()
    data_dir.mkdir(parents=True, exist_ok=True)
    fsync_folder(data_dir.parent)
    try:
        yield
    except BaseException:
        _remove_restore_files(data_dir)
        if created:
            data_dir.rmdir()
        raise


def _remove_restore_files(data_dir: Path) -> None:
    """Remove what a failed restore may have written (only its own file names)."""
    names = [f"{n}{suffix}" for n in _RESTORE_FILES for suffix in ("", "-wal", "-shm", "-journal")]
    for path in [*(data_dir / n for n in names), *data_dir.glob("snapshot-*.staged")]:
        path.unlink(missing_ok=True)


def _mode_note(origin: Origin | None, config: ClusterConfig) -> str:
    """A warning when the regrown cluster will not run by its old rules.

    A config's mode and ``min_insync`` floor never change by replication, and
    a one-member config can only have floor 1; in quorum mode that still
    means a majority of however many members the cluster grows back to.
    """
    old = origin.config if origin else None
    if old is None:
        return ""
    if old.mode != config.mode:
        return f" (note: the backed-up cluster ran in {old.mode} mode)"
    regrown = ClusterConfig.create(dict(old.members), min_insync=1, quorum=config.quorum)
    if regrown.min_insync != old.min_insync:
        return (
            f" (note: grown back to {len(old.members)} members it needs {regrown.min_insync} "
            f"in-sync members per write, the old cluster {old.min_insync})"
        )
    return ""


def _fsync_file(path: Path) -> None:
    with path.open("rb+") as file:
        os.fsync(file.fileno())
