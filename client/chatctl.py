"""``chatctl``: operate a cluster (API.md section 4).

Verbs: ``status`` (the member table, optionally refreshed with ``--watch``),
``add-member``, ``remove-member``, ``transfer-leader`` (sent to the leader,
found by asking the members), ``force-leader`` (sent to the node that is to
lead), ``backup`` and ``restore`` (a node's files, offline: client/backup.py)
and ``bench``. Exit codes: 0 success, 2 bad usage, 1 any other failure
with one line on stderr, never a traceback for an expected error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

import grpc

from client.cli import (
    Parser,
    add_cluster_flag,
    add_tls_flags,
    channel_credentials,
    member_addresses,
)
from proto import chat_pb2 as pb
from proto import chat_pb2_grpc, replication_pb2_grpc
from proto import replication_pb2 as rpb
from proto.credentials import ADMIN_ROLE, ClusterSecret, write_new_secret

T = TypeVar("T")
Row = dict[str, object]

STATUS_TIMEOUT_S = 1.0
ADMIN_DEADLINE_S = 10.0  # how long a verb keeps looking for a leader that takes it
ADMIN_CALL_TIMEOUT_S = 5.0
RETRY_PAUSE_S = 0.02
FORCE_LEADER_RISK = (
    "force-leader makes node {id} lead with an in-sync set of itself alone: writes that only "
    "other in-sync nodes hold are lost for good; use it only when the last in-sync node is gone "
    "for good, and repeat with --accept-data-loss"
)


class CtlError(Exception):
    """An expected failure: chatctl prints ``chatctl: <message>`` and exits 1."""


_credentials: grpc.ChannelCredentials | None = None  # from --tls-*, set once by main()
_admin_metadata: tuple[tuple[str, str], ...] = ()  # from --cluster-secret-file, set by main()


def credentials() -> grpc.ChannelCredentials | None:
    """The TLS credentials from --tls-* (None for plaintext), for every channel chatctl opens."""
    return _credentials


def open_channel(address: str) -> grpc.aio.Channel:
    """A channel to one member, with TLS when chatctl was given --tls-ca."""
    if _credentials is None:
        return grpc.aio.insecure_channel(address)
    return grpc.aio.secure_channel(address, _credentials)


# -- asking the members -------------------------------------------------------------------


async def fetch_status(address: str, wait_s: float = STATUS_TIMEOUT_S) -> pb.ClusterStatus | None:
    """One node's view of the cluster, or None when it does not answer in time."""
    async with open_channel(address) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        try:
            return await stub.GetClusterStatus(pb.GetClusterStatusRequest(), timeout=wait_s)
        except grpc.aio.AioRpcError:
            return None


async def cluster_views(
    addresses: Sequence[str], wait_s: float = STATUS_TIMEOUT_S
) -> dict[str, pb.ClusterStatus | None]:
    views = await asyncio.gather(*(fetch_status(a, wait_s) for a in addresses))
    return dict(zip(addresses, views, strict=True))


def reference_view(views: dict[str, pb.ClusterStatus | None]) -> pb.ClusterStatus | None:
    """The view to trust for membership: the leader's (highest term if a deposed one still
    thinks it leads), else the freshest config any member holds."""
    answers = [v for v in views.values() if v is not None]
    leaders = [v for v in answers if v.role == "leader"]
    if leaders:
        return max(leaders, key=lambda v: v.term)
    return max(answers, key=lambda v: (v.config_epoch, v.term), default=None)


async def discover(
    addresses: Sequence[str], wait_s: float = STATUS_TIMEOUT_S
) -> dict[str, pb.ClusterStatus | None]:
    """Views of the given addresses plus any member they report that was not given, so a
    node added with add-member shows even when --cluster predates it."""
    views = await cluster_views(list(dict.fromkeys(addresses)), wait_s)
    reference = reference_view(views)
    extra = [m.address for m in reference.members if m.address not in views] if reference else []
    return views | await cluster_views(extra, wait_s) if extra else views


async def _probe(address: str, wait_s: float) -> tuple[str, pb.ClusterStatus | None]:
    return address, await fetch_status(address, wait_s)


async def locate_leader(addresses: Sequence[str], wait_s: float = STATUS_TIMEOUT_S) -> str:
    """The address of a member that says it leads, or '' if none does right now.

    All members are asked at once and the first leader to answer wins: a
    stopped (SIGSTOP) member never answers, and waiting for it would add its
    timeout to every search. Followers' leader hints are asked next.
    """
    asked: set[str] = set()
    pending = list(dict.fromkeys(addresses))
    while pending:
        asked.update(pending)
        tasks = [asyncio.ensure_future(_probe(a, wait_s)) for a in pending]
        hints: list[str] = []
        try:
            for next_answer in asyncio.as_completed(tasks):
                address, view = await next_answer
                if view is not None and view.role == "leader":
                    return address
                if view is not None and view.leader_address:
                    hints.append(view.leader_address)
        finally:
            for task in tasks:
                task.cancel()
        pending = [h for h in dict.fromkeys(hints) if h not in asked]
    return ""


async def wait_for_leader(addresses: Sequence[str], timeout_s: float) -> str:
    """Poll until some member leads; TimeoutError names the members if none does in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if leader := await locate_leader(addresses, min(STATUS_TIMEOUT_S, timeout_s)):
            return leader
        await asyncio.sleep(RETRY_PAUSE_S)
    raise TimeoutError(f"no leader among {', '.join(addresses)} within {timeout_s:g}s")


def leader_hint(exc: grpc.aio.AioRpcError) -> str:
    """Where a refusing node says the leader is (``leader-address`` trailing metadata)."""
    for key, value in exc.trailing_metadata() or ():
        if key == "leader-address":
            return str(value)
    return ""


async def on_leader(
    addresses: Sequence[str], attempt: Callable[[str], Awaitable[T]], deadline_s: float
) -> T:
    """Run attempt(address) on the leader until it succeeds, and return its result.

    UNAVAILABLE (not the leader, or no process there) moves on to the
    ``leader-address`` hint it carries, else to a fresh search of the members;
    any other status is raised at once. Raises CtlError once deadline_s has
    passed without a leader taking the call.
    """
    deadline = time.monotonic() + deadline_s
    address, last_error = "", "no member knows a leader"
    while time.monotonic() < deadline:
        address = address or await locate_leader(addresses)
        if address:
            try:
                return await attempt(address)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                last_error = f"{address}: {exc.details() or 'unavailable'}"
                address = leader_hint(exc)
                if address:
                    continue
        await asyncio.sleep(RETRY_PAUSE_S)
    raise CtlError(f"no leader answered within {deadline_s:g}s ({last_error})")


# -- status -------------------------------------------------------------------------------


def status_rows(views: dict[str, pb.ClusterStatus | None]) -> list[Row]:
    """One row per address: its own answer, plus what the reference view says of it.

    Match index and lag come from the leader only (followers do not track them);
    membership and ISR fall back to the freshest config when no leader answers.
    """
    reference = reference_view(views)
    members = {m.address: m for m in reference.members} if reference else {}
    leader = reference if reference is not None and reference.role == "leader" else None
    rows = []
    for address, view in views.items():
        member = members.get(address)
        row: Row = {"address": address, "up": view is not None}
        if member is not None:
            row["id"] = member.id
        if view is not None:
            row |= {
                "id": view.node_id,
                "role": view.role,
                "term": view.term,
                "leader": view.leader_id,
                "commit": view.commit_index,
                "epoch": view.config_epoch,
                "mode": view.mode,
            }
            if view.fault:
                row["fault"] = view.fault
        if reference is not None:
            row["member"] = member is not None
        if member is not None:
            row["in_sync"] = member.in_sync
        if member is not None and leader is not None:
            row |= {
                "match": member.match_index,
                "lag": max(0, leader.commit_index - member.match_index),
            }
        rows.append(row)
    return rows


COLUMNS = (
    "id", "address", "role", "term", "leader", "commit", "epoch", "member", "in_sync", "match",
    "lag", "mode",
)  # fmt: skip


def render_table(rows: list[Row]) -> str:
    def cell(row: Row, column: str) -> str:
        if column == "role" and not row["up"]:
            return "DOWN"
        value = row.get(column, "-")
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
    faulty = [row for row in rows if "fault" in row]
    return [f"node {row.get('id', row['address'])}: {row['fault']}" for row in faulty]


def _status_once(addresses: list[str], as_json: bool) -> None:
    rows = status_rows(asyncio.run(discover(addresses)))
    print(json.dumps(rows, indent=2) if as_json else render_table(rows))
    if not any(row["up"] for row in rows):
        raise CtlError("no member answered")


CLEAR_SCREEN = "\x1b[H\x1b[2J"


async def watch_status(addresses: list[str], interval: float, count: int, as_json: bool) -> None:
    """Redraw the table every interval seconds (count times, 0 for ever).

    On a terminal each frame clears the screen first; piped output gets frames
    separated by a blank line (one JSON document per line with --json) so it
    stays readable and testable.
    """
    tty = sys.stdout.isatty()
    frame = 0
    while count == 0 or frame < count:
        started = time.monotonic()
        rows = status_rows(await discover(addresses))
        if as_json:
            print(json.dumps(rows), flush=True)
        else:
            title = f"every {interval:g}s: chatctl status    {time.strftime('%H:%M:%S')}"
            prefix = CLEAR_SCREEN if tty else ("\n" if frame else "")
            print(f"{prefix}{title}\n\n{render_table(rows)}", flush=True)
        frame += 1
        if count == 0 or frame < count:
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))


# -- admin verbs ----------------------------------------------------------------------------


def _admin_attempt(method: str, request: object) -> Callable[[str], Awaitable[rpb.AdminReply]]:
    async def attempt(address: str) -> rpb.AdminReply:
        async with open_channel(address) as channel:
            rpc = getattr(replication_pb2_grpc.AdminStub(channel), method)
            return await rpc(request, timeout=ADMIN_CALL_TIMEOUT_S, metadata=_admin_metadata)

    return attempt


async def admin_on_leader(addresses: Sequence[str], method: str, request: object) -> str:
    """Send one Admin call to the leader; its one-line reply, or CtlError with the refusal."""
    try:
        reply = await on_leader(addresses, _admin_attempt(method, request), ADMIN_DEADLINE_S)
    except grpc.aio.AioRpcError as exc:
        raise CtlError(exc.details() or exc.code().name.lower()) from None
    return reply.message


def spec_ids(spec: str) -> dict[int, str]:
    """The ``ID=HOST:PORT`` items of a member list, by id (items without an id are skipped)."""
    ids = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        node_id, sep, address = item.partition("=")
        if sep and node_id.isdigit():
            ids[int(node_id)] = address
    return ids


async def address_of(node_id: int, spec: str, addresses: Sequence[str]) -> str:
    """Node node_id's address: from --cluster if it names ids, else from the members' views."""
    if address := spec_ids(spec).get(node_id):
        return address
    for address, view in (await discover(addresses)).items():
        if view is not None and view.node_id == node_id:
            return address
    raise CtlError(f"node {node_id} is not in --cluster and no member answered for it")


async def force_leader(node_id: int, spec: str, addresses: Sequence[str]) -> str:
    """ForceLeader goes to the node that is to lead, never to a leader: there may be none."""
    address = await address_of(node_id, spec, addresses)
    request = rpb.ForceLeaderRequest(accept_data_loss=True)
    try:
        reply = await _admin_attempt("ForceLeader", request)(address)
    except grpc.aio.AioRpcError as exc:
        raise CtlError(f"node {node_id} at {address}: {exc.details()}") from None
    return reply.message


async def await_leader(addresses: Sequence[str], node_id: int, timeout_s: float) -> str:
    """Poll until node_id says it leads (a transfer completes asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for view in (await discover(addresses)).values():
            if view is not None and view.node_id == node_id and view.role == "leader":
                return f"node {node_id} leads (term {view.term})"
        await asyncio.sleep(0.1)
    raise CtlError(f"node {node_id} did not take over within {timeout_s:g}s")


async def transfer_leader(addresses: Sequence[str], node_id: int, wait_s: float) -> str:
    message = await admin_on_leader(
        addresses, "TransferLeader", rpb.TransferLeaderRequest(id=node_id)
    )
    if wait_s > 0:
        print(message, flush=True)
        message = await await_leader(addresses, node_id, wait_s)
    return message


# -- command line --------------------------------------------------------------------------


def _positive_id(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"bad node id {text!r}: expected an integer >= 1")
    return int(text)


def _host_port(text: str) -> str:
    try:
        return member_addresses(text)[0]
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


def _add_status_parser(verbs: argparse._SubParsersAction) -> None:
    status = verbs.add_parser("status", help="print the members, roles, term, epoch, ISR and lag")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    status.add_argument(
        "--interval", type=_positive_float, default=1.0, help="seconds between refreshes"
    )
    status.add_argument(
        "--count", type=_count, default=0, help="with --watch: stop after N refreshes (0: never)"
    )


def _add_admin_parsers(verbs: argparse._SubParsersAction) -> None:
    add = verbs.add_parser(
        "add-member",
        help="add a node (start it with chatnode --join); it joins outside the ISR and grows in",
    )
    add.add_argument("id", type=_positive_id)
    add.add_argument("address", type=_host_port, metavar="HOST:PORT")
    remove = verbs.add_parser("remove-member", help="remove a node (not the leader)")
    remove.add_argument("id", type=_positive_id)
    transfer = verbs.add_parser("transfer-leader", help="hand leadership to an in-sync follower")
    transfer.add_argument("id", type=_positive_id)
    transfer.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="S",
        help="then wait up to S seconds for the node to lead",
    )
    force = verbs.add_parser(
        "force-leader", help="make a node lead alone when the last in-sync node is lost for good"
    )
    force.add_argument("id", type=_positive_id)
    force.add_argument(
        "--accept-data-loss",
        action="store_true",
        help="required: writes only other in-sync nodes hold are lost",
    )


def _add_secret_parser(verbs: argparse._SubParsersAction) -> None:
    secret = verbs.add_parser("secret", help="make a cluster secret for --cluster-secret-file")
    actions = secret.add_subparsers(dest="secret_verb", required=True)
    new = actions.add_parser("new", help="write a fresh random secret to FILE (mode 0600)")
    new.add_argument("file", metavar="FILE", type=Path)


def new_secret(path: Path) -> str:
    try:
        write_new_secret(path)
    except FileExistsError:
        raise CtlError(f"{path} exists; remove it first to replace the secret") from None
    return f"wrote a new cluster secret to {path} (mode 0600); copy it to every member"


def _add_backup_parsers(verbs: argparse._SubParsersAction) -> None:
    """backup and restore work on a node's data dir on its own machine; no cluster is asked."""
    data_dir = os.environ.get("CHAT_DATA_DIR")
    data_dir_help = "the node's data dir (CHAT_DATA_DIR)"
    backup = verbs.add_parser(
        "backup", help="copy a running node's chat state to FILE, consistently, and check it"
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
    restore = verbs.add_parser(
        "restore",
        help="make a fresh data dir from a backup: node ID alone in a new cluster; grow it "
        "back with add-member and --join",
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
        "--address", type=_host_port, required=True, metavar="HOST:PORT", help="its address"
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


def _add_bench_parser(verbs: argparse._SubParsersAction) -> None:
    bench = verbs.add_parser(
        "bench",
        help="throughput, latency, delivery, failover, memory and scale on a local cluster",
    )
    bench.add_argument("--nodes", type=int, default=3, help="size of the local cluster (3)")
    bench.add_argument(
        "--use-cluster", action="store_true", help="measure --cluster instead of a local one"
    )
    bench.add_argument(
        "--parts",
        help="comma-separated: throughput,delivery,memory,failover,scale "
        "(default: all but scale; with --use-cluster: throughput,delivery, and failover "
        "with --node-control)",
    )
    bench.add_argument(
        "--node-control",
        metavar="CMD",
        help="with --use-cluster: a command run as `CMD ID KILL|STOP|CONT|start` that acts on "
        "node ID, for the failover part (e.g. 'deploy/cluster.sh signal HOSTS_FILE')",
    )
    bench.add_argument("--scale", action="store_true", help="add the (long) scale part")
    bench.add_argument("--quick", action="store_true", help="small sizes: a run of seconds")
    bench.add_argument("--clients", help="throughput concurrency levels (1,8,32,128)")
    bench.add_argument(
        "--paths",
        help="throughput over: stream (the library's Session stream), unary (one SendMessage "
        "call each), or both, comma-separated (default: stream)",
    )
    bench.add_argument("--unary", action="store_true", help="the same as --paths unary")
    bench.add_argument("--messages", type=int, help="messages per throughput level (3000)")
    bench.add_argument("--failover-runs", type=int, help="runs per failover kind (5)")
    bench.add_argument("--memory-messages", type=int, help="stored messages for RSS (100000)")
    bench.add_argument("--scale-messages", type=int, help="stored messages, scale part (1000000)")
    bench.add_argument("--load-clients", type=int, help="concurrency of bulk loads (128)")
    bench.add_argument("--json", action="store_true", help="machine-readable output")
    bench.add_argument(
        "--side-by-side-json",
        action="store_true",
        help="only one JSON line per throughput level (system, conc, n, rate, p50, p99), "
        "as ../shared/bench/side-by-side.sh's CHAT_EXTRA_LOAD prints",
    )


def _parser() -> Parser:
    parser = Parser(prog="chatctl", description="Operate a chat cluster.")
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
    _add_backup_parsers(verbs)
    _add_bench_parser(verbs)
    return parser


def _run_verb(args: argparse.Namespace, addresses: list[str]) -> None:
    """Carry out one verb; CtlError, OSError and TimeoutError become exit 1."""
    match args.verb:
        case "status" if args.watch:
            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(watch_status(addresses, args.interval, args.count, args.json))
        case "status":
            _status_once(addresses, args.json)
        case "add-member":
            request = rpb.AddMemberRequest(id=args.id, address=args.address)
            print(asyncio.run(admin_on_leader(addresses, "AddMember", request)))
        case "remove-member":
            request = rpb.RemoveMemberRequest(id=args.id)
            print(asyncio.run(admin_on_leader(addresses, "RemoveMember", request)))
        case "transfer-leader":
            print(asyncio.run(transfer_leader(addresses, args.id, args.wait)))
        case "force-leader":
            print(asyncio.run(force_leader(args.id, args.cluster, addresses)))
        case "secret":
            print(new_secret(args.file))
        case "backup" | "restore":
            print(_backup_verb(args))
        case "bench":
            # Imported here: the bench modules build on this module's probes.
            from client import bench

            bench.main(args, addresses)


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        addresses = member_addresses(args.cluster)
    except ValueError as exc:
        if not (args.verb == "bench" and not args.use_cluster):  # its own cluster needs none
            parser.error(str(exc))
        addresses = []
    global _credentials, _admin_metadata
    try:
        _credentials = channel_credentials(args)
        if args.cluster_secret_file:
            secret = ClusterSecret.load(Path(args.cluster_secret_file))
            _admin_metadata = secret.metadata(ADMIN_ROLE)
    except ValueError as exc:
        parser.error(str(exc))
    except OSError as exc:
        parser.exit(1, f"chatctl: {exc}\n")
    if args.verb == "force-leader" and not args.accept_data_loss:
        parser.exit(2, f"chatctl: {FORCE_LEADER_RISK.format(id=args.id)}\n")
    if args.verb == "bench":
        from client import bench

        bench.check_usage(parser, args)
    try:
        _run_verb(args, addresses)
    except (CtlError, OSError, TimeoutError) as exc:
        print(f"chatctl: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("chatctl: interrupted", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
