"""``chatctl``: operate a cluster (docs/api.md, "chatctl").

Verbs: ``status`` (the member table, optionally refreshed with ``--watch``, or one
line and an exit code for scripts with ``--check``),
``add-member``, ``remove-member``, ``transfer-leader`` (sent to the leader,
found by asking the members), ``force-leader`` (sent to the node that is to
lead), ``secret new``, ``snapshot save`` (the leader's state over the Admin API)
and ``snapshot status`` (a saved file, offline: client/snapshot_file.py),
``backup`` and ``restore`` (a node's files, offline: client/backup.py) and
``bench`` (the bench package). Each verb is a few lines
over :class:`client.admin.ClusterAdmin`; this module holds the flags and the
output. Exit codes: 0 success, 2 bad usage, 1 any other failure with one line
on stderr, never a traceback for an expected error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import bench
from client import snapshot_file
from client.admin import AdminError, ClusterAdmin, Row, health_problems
from client.cli import add_cluster_flag, add_tls_flags, tls_from_args
from proto.addresses import MemberAddress
from proto.cli import Parser, add_version_flag, member_addresses, member_ids
from proto.credentials import ADMIN_ROLE, ClusterSecret, write_new_secret

FORCE_LEADER_RISK = (
    "force-leader makes node {id} lead with an in-sync set of itself alone: writes that only "
    "other in-sync nodes hold are lost for good; use it only when the last in-sync node is gone "
    "for good, and repeat with --accept-data-loss"
)


class CtlError(Exception):
    """An expected failure: chatctl prints ``chatctl: <message>`` and exits 1."""


COLUMNS = (
    "id", "address", "role", "term", "leader", "commit", "applied", "epoch", "member",
    "in_sync", "match", "lag", "clock_ms", "mode", "version",
)  # fmt: skip


def render_table(rows: list[Row]) -> str:
    def cell(row: Row, column: str) -> str:
        if column == "role" and not row.up:
            return "DOWN"
        value = getattr(row, column)
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "no"
        return str(value)

    table = [[c.upper().replace("_", "-") for c in COLUMNS]]
    table += [[cell(row, c) for c in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in table
    ]
    return "\n".join(lines + fault_lines(rows))


def fault_lines(rows: list[Row]) -> list[str]:
    """One line per node that cannot write to its disk, saying why."""
    return [f"{row.node}: {row.fault}" for row in rows if row.fault is not None]


def rows_json(rows: list[Row], indent: int | None = None) -> str:
    return json.dumps([row.as_json() for row in rows], indent=indent)


def print_status(rows: list[Row], as_json: bool) -> None:
    print(rows_json(rows, indent=2) if as_json else render_table(rows))
    if not any(row.up for row in rows):
        raise CtlError("no member answered")


def check_status(rows: list[Row]) -> str:
    """One line for a script: healthy (exit 0), or CtlError saying why not (exit 1)."""
    if problems := health_problems(rows):
        raise CtlError(f"degraded: {'; '.join(problems)}")
    leader = next(row for row in rows if row.role == "leader")
    members = sum(1 for row in rows if row.member is not False)
    return f"healthy: {members} members in sync, leader {leader.id}, term {leader.term}"


CLEAR_SCREEN = "\x1b[H\x1b[2J"


async def watch_status(admin: ClusterAdmin, interval: float, count: int, as_json: bool) -> None:
    """Redraw the table every interval seconds (count times, 0 for ever).

    On a terminal each frame clears the screen first; piped output gets frames
    separated by a blank line (one JSON document per line with --json) so it
    stays readable and testable.
    """
    tty = sys.stdout.isatty()
    frame = 0
    while count == 0 or frame < count:
        started = time.monotonic()
        rows = await admin.status()
        if as_json:
            print(rows_json(rows), flush=True)
        else:
            title = f"every {interval:g}s: chatctl status    {time.strftime('%H:%M:%S')}"
            prefix = CLEAR_SCREEN if tty else ("\n" if frame else "")
            print(f"{prefix}{title}\n\n{render_table(rows)}", flush=True)
        frame += 1
        if count == 0 or frame < count:
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))


# -- command line --------------------------------------------------------------------------


def _positive_id(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"bad node id {text!r}: expected an integer >= 1")
    return int(text)


def _member_address(text: str) -> str:
    try:
        return str(MemberAddress.parse(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a count >= 0, got {text!r}")
    return int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


Verbs = argparse._SubParsersAction


def _verb(verbs: Verbs, name: str, summary: str, example: str) -> argparse.ArgumentParser:
    """A verb's parser: its summary in chatctl's list, and with an example in its --help."""
    return verbs.add_parser(
        name,
        help=summary,
        description=f"{summary[0].upper()}{summary[1:]}.\n\nExample: {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_status_parser(verbs: Verbs) -> None:
    status = _verb(
        verbs,
        "status",
        "print the members, roles, term, epoch, ISR and lag",
        "chatctl --cluster 1=10.0.0.1:7001,2=10.0.0.2:7001 status --watch",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    status.add_argument(
        "--check",
        action="store_true",
        help="one line; exit 0 when healthy, 1 when degraded (no leader, a member down, "
        "out of sync or with a disk fault)",
    )
    status.add_argument(
        "--interval", type=_positive_float, default=1.0, help="seconds between refreshes"
    )
    status.add_argument(
        "--count", type=_count, default=0, help="with --watch: stop after N refreshes (0: never)"
    )


def _add_admin_parsers(verbs: Verbs) -> None:
    add = _verb(
        verbs,
        "add-member",
        "add a node (start it with chatnode --join); it joins outside the ISR and grows in",
        "chatctl --cluster ... add-member 4 10.0.0.4:7001",
    )
    add.add_argument("id", type=_positive_id)
    add.add_argument(
        "address",
        type=_member_address,
        metavar="ADDRESS",
        help="HOST:PORT, or PEER_HOST:PORT/CLIENT_HOST:PORT for a node with two listeners",
    )
    remove = _verb(
        verbs,
        "remove-member",
        "remove a node (not the leader)",
        "chatctl --cluster ... remove-member 4",
    )
    remove.add_argument("id", type=_positive_id)
    transfer = _verb(
        verbs,
        "transfer-leader",
        "hand leadership to an in-sync follower",
        "chatctl --cluster ... transfer-leader 2 --wait 5",
    )
    transfer.add_argument("id", type=_positive_id)
    transfer.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="S",
        help="then wait up to S seconds for the node to lead",
    )
    force = _verb(
        verbs,
        "force-leader",
        "make a node lead alone when the last in-sync node is lost for good",
        "chatctl --cluster ... force-leader 3 --accept-data-loss",
    )
    force.add_argument("id", type=_positive_id)
    force.add_argument(
        "--accept-data-loss",
        action="store_true",
        help="required: writes only other in-sync nodes hold are lost",
    )


def _add_secret_parser(verbs: Verbs) -> None:
    secret = _verb(
        verbs,
        "secret",
        "make a cluster secret for --cluster-secret-file",
        "chatctl secret new /etc/chat/cluster.secret",
    )
    actions = secret.add_subparsers(dest="secret_verb", required=True)
    new = _verb(
        actions,
        "new",
        "write a fresh random secret to FILE (mode 0600)",
        "chatctl secret new /etc/chat/cluster.secret",
    )
    new.add_argument("file", metavar="FILE", type=Path)


def new_secret(path: Path) -> str:
    try:
        write_new_secret(path)
    except FileExistsError:
        raise CtlError(f"{path} exists; remove it first to replace the secret") from None
    return f"wrote a new cluster secret to {path} (mode 0600); copy it to every member"


def _add_snapshot_parser(verbs: Verbs) -> None:
    snapshot = _verb(
        verbs,
        "snapshot",
        "save the leader's state to a file over the admin API, or check such a file",
        "chatctl --cluster ... snapshot save chat-snapshot.db",
    )
    actions = snapshot.add_subparsers(dest="snapshot_verb", required=True)
    save = _verb(
        actions,
        "save",
        "stream a consistent copy of the leader's state to FILE; the leader keeps serving",
        "chatctl --cluster 1=10.0.0.1:7001 snapshot save chat-snapshot.db",
    )
    save.add_argument("file", metavar="FILE", type=Path)
    status = _verb(
        actions,
        "status",
        "check a saved FILE whole and print its index, term, size and checksum",
        "chatctl snapshot status chat-snapshot.db",
    )
    status.add_argument("file", metavar="FILE", type=Path)


async def save_snapshot(admin: ClusterAdmin, path: Path) -> str:
    info = await admin.save_snapshot(path)
    header = info.header
    return (
        f"saved the state of node {header.leader} at index {header.index} (term {header.term}) "
        f"to {path}: {info.file_size} bytes, sha256 {info.sha256}"
    )


def _add_backup_parsers(verbs: Verbs) -> None:
    """backup and restore work on a node's data dir on its own machine; no cluster is asked."""
    data_dir = os.environ.get("CHAT_DATA_DIR")
    data_dir_help = "the node's data dir (CHAT_DATA_DIR)"
    backup = _verb(
        verbs,
        "backup",
        "copy a running node's chat state to FILE, consistently, and check it",
        "chatctl backup --data-dir /var/lib/chat/node-1 chat-backup.db",
    )
    backup.add_argument(
        "--data-dir",
        type=Path,
        default=data_dir,
        required=not data_dir,
        metavar="DIR",
        help=data_dir_help,
    )
    backup.add_argument("file", metavar="FILE", type=Path)
    restore = _verb(
        verbs,
        "restore",
        "make a fresh data dir from a backup: node ID alone in a new cluster; grow it "
        "back with add-member and --join",
        "chatctl restore chat-backup.db --data-dir /var/lib/chat/node-1 --id 1 "
        "--address 10.0.0.1:7001",
    )
    restore.add_argument("file", metavar="FILE", type=Path)
    restore.add_argument(
        "--data-dir",
        type=Path,
        default=data_dir,
        required=not data_dir,
        metavar="DIR",
        help=f"{data_dir_help}; must be empty or absent",
    )
    restore.add_argument("--id", type=_positive_id, required=True, help="the restored node's id")
    restore.add_argument(
        "--address",
        type=_member_address,
        required=True,
        metavar="ADDRESS",
        help="its address, as in --cluster",
    )
    restore.add_argument(
        "--mode",
        choices=("fail-stop", "quorum"),
        help="the new cluster's mode, fixed for good (default: the backed-up cluster's)",
    )


def _backup_verb(args: argparse.Namespace) -> str:
    # Imported here: client.backup imports the server's storage code, which other verbs
    # do not need.
    from client import backup

    try:
        if args.verb == "backup":
            return backup.backup(args.data_dir, args.file)
        return backup.restore(args.file, args.data_dir, args.id, args.address, args.mode)
    except backup.BackupError as exc:
        raise CtlError(str(exc)) from None


def _add_bench_parser(verbs: Verbs) -> None:
    bench.add_arguments(
        _verb(
            verbs,
            "bench",
            "throughput, latency, delivery, failover, memory and scale on a local cluster",
            "chatctl bench --parts throughput --paths unary,stream",
        )
    )


def _parser() -> Parser:
    # No abbreviated flags: with them, argparse would read the bench's --tls, after the verb,
    # as an ambiguous prefix of --tls-ca, --tls-cert and --tls-key.
    parser = Parser(prog="chatctl", description="Operate a chat cluster.", allow_abbrev=False)
    add_version_flag(parser)
    add_cluster_flag(parser)
    add_tls_flags(parser)
    parser.add_argument(
        "--cluster-secret-file",
        metavar="FILE",
        default=os.environ.get("CHAT_CLUSTER_SECRET_FILE"),
        help="the cluster's shared secret, for the admin verbs (CHAT_CLUSTER_SECRET_FILE)",
    )
    verbs = parser.add_subparsers(dest="verb", required=True)
    _add_status_parser(verbs)
    _add_admin_parsers(verbs)
    _add_secret_parser(verbs)
    _add_snapshot_parser(verbs)
    _add_backup_parsers(verbs)
    _add_bench_parser(verbs)
    return parser


def _run_verb(args: argparse.Namespace, admin: ClusterAdmin) -> None:
    """Carry out one verb; CtlError, AdminError, OSError and TimeoutError become exit 1."""
    match args.verb:
        case "status" if args.watch:
            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(watch_status(admin, args.interval, args.count, args.json))
        case "status" if args.check:
            print(check_status(asyncio.run(admin.status())))
        case "status":
            print_status(asyncio.run(admin.status()), args.json)
        case "add-member":
            print(asyncio.run(admin.add_member(args.id, args.address)))
        case "remove-member":
            print(asyncio.run(admin.remove_member(args.id)))
        case "transfer-leader":
            print(asyncio.run(_transfer_leader(admin, args.id, args.wait)))
        case "force-leader":
            print(asyncio.run(admin.force_leader(args.id)))
        case "secret":
            print(new_secret(args.file))
        case "snapshot" if args.snapshot_verb == "save":
            print(asyncio.run(save_snapshot(admin, args.file)))
        case "snapshot":
            print(snapshot_file.describe(snapshot_file.check(args.file)))
        case "backup" | "restore":
            print(_backup_verb(args))
        case "bench":
            bench.main(args, admin.addresses, admin.ids, admin.credentials)


async def _transfer_leader(admin: ClusterAdmin, node_id: int, wait_s: float) -> str:
    message = await admin.transfer_leader(node_id)
    if wait_s > 0:
        print(message, flush=True)
        message = await admin.await_leader(node_id, wait_s)
    return message


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        addresses, ids = member_addresses(args.cluster), member_ids(args.cluster)
    except ValueError as exc:
        if not (args.verb == "bench" and not args.use_cluster):  # its own cluster needs none
            parser.error(str(exc))
        addresses, ids = [], {}
    try:
        credentials = tls_from_args(args)
        metadata = ()
        if args.cluster_secret_file:
            metadata = ClusterSecret.load(Path(args.cluster_secret_file)).metadata(ADMIN_ROLE)
    except ValueError as exc:
        parser.error(str(exc))
    except OSError as exc:
        parser.exit(1, f"chatctl: {exc}\n")
    if args.verb == "status" and args.check and (args.watch or args.json):
        parser.error("--check prints one line: it takes neither --watch nor --json")
    if args.verb == "force-leader" and not args.accept_data_loss:
        parser.exit(2, f"chatctl: {FORCE_LEADER_RISK.format(id=args.id)}\n")
    if args.verb == "bench":
        bench.check_usage(parser, args, ids)
    admin = ClusterAdmin(addresses, ids=ids, credentials=credentials, metadata=metadata)
    try:
        _run_verb(args, admin)
    except (
        CtlError,
        AdminError,
        snapshot_file.SnapshotFileError,
        bench.BenchError,
        OSError,
        TimeoutError,
    ) as exc:
        print(f"chatctl: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("chatctl: interrupted", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
