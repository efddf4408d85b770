"""``chatctl``: operate a cluster (API.md section 4). ``chatctl status`` prints the members."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

import grpc

from client import bench
from client.cli import Parser, add_cluster_flag, member_addresses
from proto import chat_pb2 as pb
from proto import chat_pb2_grpc

STATUS_TIMEOUT_S = 1.0


async def fetch_status(address: str) -> pb.ClusterStatus | None:
    """One node's view of the cluster, or None when it does not answer in time."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        try:
            return await stub.GetClusterStatus(
                pb.GetClusterStatusRequest(), timeout=STATUS_TIMEOUT_S
            )
        except grpc.aio.AioRpcError:
            return None


async def cluster_views(addresses: Sequence[str]) -> dict[str, pb.ClusterStatus | None]:
    views = await asyncio.gather(*(fetch_status(a) for a in addresses))
    return dict(zip(addresses, views, strict=True))


def status_rows(views: dict[str, pb.ClusterStatus | None]) -> list[dict[str, object]]:
    """One row per member: its own answer, plus what the leader says of it (ISR, match)."""
    leader = next((v for v in views.values() if v is not None and v.role == "leader"), None)
    seen_by_leader = {m.address: m for m in leader.members} if leader else {}
    rows = []
    for address, view in views.items():
        member = seen_by_leader.get(address)
        row: dict[str, object] = {"address": address, "up": view is not None}
        if view is not None:
            row |= {
                "id": view.node_id,
                "role": view.role,
                "term": view.term,
                "leader": view.leader_id,
                "commit": view.commit_index,
                "epoch": view.config_epoch,
            }
        if member is not None and leader is not None:
            row |= {
                "in_sync": member.in_sync,
                "match": member.match_index,
                "lag": max(0, leader.commit_index - member.match_index),
            }
        rows.append(row)
    return rows


COLUMNS = ("id", "address", "role", "term", "leader", "commit", "epoch", "in_sync", "match", "lag")


def render_table(rows: list[dict[str, object]]) -> str:
    def cell(row: dict[str, object], column: str) -> str:
        if column == "role" and not row["up"]:
            return "DOWN"
        value = row.get(column, "-")
        if isinstance(value, bool):
            return "yes" if value else "no"
        return str(value)

    table = [[c.upper().replace("_", "-") for c in COLUMNS]]
    table += [[cell(row, c) for c in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in table
    )


def _parser() -> Parser:
    parser = Parser(prog="chatctl", description="Operate a chat cluster.")
    add_cluster_flag(parser)
    verbs = parser.add_subparsers(dest="verb", required=True)
    status = verbs.add_parser("status", help="print the members, roles, term, ISR and lag")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    bench = verbs.add_parser("bench", help="measure committed SendMessage/s and latency")
    bench.add_argument(
        "--nodes", type=int, default=1, help="size of the local cluster to start (default 1)"
    )
    bench.add_argument(
        "--use-cluster", action="store_true", help="measure --cluster instead of a local one"
    )
    bench.add_argument("--clients", default="1,16", help="concurrency levels, comma-separated")
    bench.add_argument("--messages", type=int, default=2000, help="messages per level")
    bench.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _bench(args: argparse.Namespace, addresses: list[str]) -> None:
    clients = [int(c) for c in args.clients.split(",")]
    if args.use_cluster:
        results = asyncio.run(bench.run_bench(addresses, clients, args.messages, {}))
    else:
        with bench.local_cluster(args.nodes) as nodes:
            metrics = {n.address: n.metrics_url for n in nodes}
            local = [n.address for n in nodes]
            results = asyncio.run(bench.run_bench(local, clients, args.messages, metrics))
    print(json.dumps(bench.as_dicts(results), indent=2) if args.json else bench.render(results))


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        addresses = member_addresses(args.cluster)
    except ValueError as exc:
        parser.error(str(exc))
    if args.verb == "bench":
        _bench(args, addresses)
        return
    rows = status_rows(asyncio.run(cluster_views(addresses)))
    print(json.dumps(rows, indent=2) if args.json else render_table(rows))
    if not any(row["up"] for row in rows):
        print("chatctl: no member answered", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
