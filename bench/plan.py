"""What a bench run measures, and how much: the parts and sizes, from chatctl's flags.

Parts, in the order they run on one cluster: ``scale`` (opt-in, first point),
``throughput``, ``delivery``, ``memory``, ``failover``, ``scale`` (second
point), ``catchup`` (opt-in), ``recovery`` (opt-in); see bench.run. ``--quick``
shrinks every size to a run of seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

from bench.load import PATHS
from proto.limits import BODY_MAX_BYTES

PARTS = ("throughput", "delivery", "memory", "failover", "scale", "catchup", "recovery")
LOCAL_ONLY = frozenset({"memory", "failover", "catchup", "recovery"})
OPT_IN = frozenset({"scale", "catchup", "recovery"})
DEFAULT_PARTS = tuple(p for p in PARTS if p not in OPT_IN)


@dataclass(frozen=True, slots=True)
class Plan:
    """Sizes of one bench run; QUICK shrinks them to a run of seconds (the test's)."""

    parts: tuple[str, ...] = DEFAULT_PARTS
    paths: tuple[str, ...] = ("stream",)  # throughput: the product's own path
    clients: tuple[int, ...] = (1, 8, 32, 128)
    messages: int = 3_000  # per throughput level
    warmup: int = 200
    delivery_senders: int = 8
    delivery_per_sender: int = 100
    failover_runs: int = 5
    memory_messages: int = 100_000
    scale_small: int = 1_000
    scale_messages: int = 1_000_000
    scale_samples: int = 500
    # Concurrency of bulk loads (memory, scale). More does not load faster: past
    # ~128 the leader's one event loop is saturated (about 1,300 msg/s on 2 cores).
    load_clients: int = 128
    # catchup: bodies loaded while a follower is down, then its snapshot catch-up timed.
    catchup_bytes: int = 1 << 30
    catchup_clients: int = 32  # its load's concurrency: 16 and 64 load 64 KiB bodies alike
    # The nodes' --log-keep-entries when catchup runs, at most (see catchup_log_keep):
    # large enough to hold every write made while the snapshot is on its way
    # (catchup_write_rate times its seconds), or the follower needs another.
    catchup_keep_entries: int = 5_000
    catchup_write_rate: float = 100.0  # small writes a second during the catch-up
    catchup_before_s: float = 5.0  # of writes timed before the restart, to compare with
    catchup_timeout_s: float = 600.0  # restart -> in sync, at most
    # recovery: a follower restarted on this many stored messages with at least
    # recovery_log_entries in its log (the nodes' --log-keep-entries), then wiped and
    # added back empty.
    recovery_messages: int = 1_000_000
    recovery_log_entries: int = 100_000
    recovery_timeout_s: float = 600.0  # each restart -> in sync, at most

    @property
    def catchup_messages(self) -> int:
        """Bodies of the largest size that make up catchup_bytes."""
        return -(-self.catchup_bytes // BODY_MAX_BYTES)

    @property
    def catchup_log_keep(self) -> int:
        """catchup_keep_entries, or less for a small load: the leader compacts once its log
        holds twice what it keeps, and the load must take it past that, with room to spare
        for the entries before it."""
        return max(1, min(self.catchup_keep_entries, self.catchup_messages // 3))

    @property
    def log_keep_entries(self) -> int | None:
        """The nodes' --log-keep-entries for the parts chosen; None: the product's default."""
        if "catchup" in self.parts:
            return self.catchup_log_keep
        if "recovery" in self.parts:
            return self.recovery_log_entries
        return None


QUICK = {
    "clients": (1, 8),
    "messages": 200,
    "warmup": 50,
    "delivery_per_sender": 10,
    "failover_runs": 1,
    "memory_messages": 2_000,
    "scale_small": 300,
    "scale_messages": 3_000,
    "scale_samples": 50,
    "load_clients": 32,
    "catchup_bytes": 32 << 20,
    "catchup_clients": 8,
    "catchup_write_rate": 50.0,
    "catchup_before_s": 1.0,
    "catchup_timeout_s": 60.0,
    "recovery_messages": 3_000,
    "recovery_log_entries": 1_000,
    "recovery_timeout_s": 60.0,
}


# -- plan from flags --------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The bench's flags, on chatctl's ``bench`` verb."""
    parser.add_argument("--nodes", type=int, default=3, help="size of the local cluster (3)")
    parser.add_argument(
        "--use-cluster", action="store_true", help="measure --cluster instead of a local one"
    )
    parser.add_argument(
        "--parts",
        help="comma-separated: throughput,delivery,memory,failover,scale,catchup,recovery "
        "(default: all but scale, catchup and recovery; with --use-cluster: "
        "throughput,delivery, and failover with --node-control)",
    )
    parser.add_argument(
        "--node-control",
        metavar="CMD",
        help="with --use-cluster: a command run as `CMD ID KILL|STOP|CONT|start` that acts on "
        "node ID, for the failover part (e.g. 'deploy/cluster.sh signal HOSTS_FILE')",
    )
    parser.add_argument("--scale", action="store_true", help="add the (long) scale part")
    parser.add_argument("--quick", action="store_true", help="small sizes: a run of seconds")
    parser.add_argument("--clients", help="throughput concurrency levels (1,8,32,128)")
    parser.add_argument(
        "--paths",
        help="throughput over: stream (the library's Session stream), unary (one SendMessage "
        "call each), or both, comma-separated (default: stream)",
    )
    parser.add_argument("--unary", action="store_true", help="the same as --paths unary")
    parser.add_argument("--messages", type=int, help="messages per throughput level (3000)")
    parser.add_argument("--failover-runs", type=int, help="runs per failover kind (5)")
    parser.add_argument("--memory-messages", type=int, help="stored messages for RSS (100000)")
    parser.add_argument("--scale-messages", type=int, help="stored messages, scale part (1000000)")
    parser.add_argument("--load-clients", type=int, help="concurrency of bulk loads (128)")
    parser.add_argument(
        "--catchup-mib",
        type=int,
        help="catchup: MiB of message bodies loaded while a follower is down (1024)",
    )
    parser.add_argument(
        "--recovery-messages",
        type=int,
        help="recovery: stored messages when a follower is restarted (1000000)",
    )
    parser.add_argument(
        "--recovery-log-entries",
        type=int,
        help="recovery: log entries the nodes keep, its --log-keep-entries (100000)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="the bench's own cluster serves mutual TLS only, with a throwaway CA and "
        "certificates made by openssl; every bench channel uses them (for --use-cluster, give "
        "chatctl's --tls-ca, --tls-cert and --tls-key instead)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--side-by-side-json",
        action="store_true",
        help="only one JSON line per throughput level (system, conc, n, rate, p50, p99), "
        "as ../shared/bench/side-by-side.sh's CHAT_EXTRA_LOAD prints",
    )


def _parts(args: argparse.Namespace) -> tuple[str, ...]:
    if args.parts:
        chosen = {p.strip() for p in args.parts.split(",") if p.strip()}
    else:
        chosen = set(DEFAULT_PARTS) - (LOCAL_ONLY if args.use_cluster else set())
        if args.use_cluster and args.node_control:
            chosen.add("failover")
    if args.scale:
        chosen.add("scale")
    return tuple(p for p in PARTS if p in chosen)


def check_usage(
    parser: argparse.ArgumentParser, args: argparse.Namespace, ids: dict[int, str]
) -> None:
    """Refuse bad bench flags with exit 2 before any cluster starts; ids are --cluster's
    members by id."""
    if args.parts:
        unknown = {p.strip() for p in args.parts.split(",")} - set(PARTS) - {""}
        if unknown:
            parser.error(f"unknown bench part(s) {', '.join(sorted(unknown))}: choose {PARTS}")
    local = LOCAL_ONLY - ({"failover"} if args.node_control else set())
    if args.use_cluster and (needed := local & set(_parts(args))):
        parser.error(
            f"{', '.join(sorted(needed))} need the bench's own cluster (failover: or "
            "--node-control): drop --use-cluster"
        )
    if args.tls and args.use_cluster:
        parser.error("--tls is for the bench's own cluster: for --cluster's, give --tls-ca")
    if args.node_control and not args.use_cluster:
        parser.error("--node-control acts on --cluster's nodes: add --use-cluster")
    if args.node_control and not ids:
        parser.error("--node-control needs --cluster with ids (ID=HOST:PORT,...)")
    numbers = ("nodes", "messages", "failover_runs", "memory_messages", "scale_messages")
    recovery = ("recovery_messages", "recovery_log_entries")
    for name in (*numbers, "load_clients", "catchup_mib", *recovery):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    try:
        _clients(args.clients)
    except ValueError:
        parser.error(f"--clients wants positive integers, comma-separated, not {args.clients!r}")
    if unknown_paths := set(_paths(args) or ()) - set(PATHS):
        parser.error(f"unknown path(s) {', '.join(sorted(unknown_paths))}: choose {PATHS}")
    if args.unary and args.paths:
        parser.error("--unary is --paths unary: give one of them")
    _check_recovery(parser, args)


def _check_recovery(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The recovery part's sizes must make the wiped node need a snapshot, and its log
    cannot share a cluster with catchup's short one."""
    plan = plan_from_args(args)
    if "recovery" not in plan.parts:
        return
    if "catchup" in plan.parts:
        parser.error("catchup and recovery need different --log-keep-entries: run them apart")
    if plan.recovery_messages <= 2 * plan.recovery_log_entries:
        parser.error(
            "--recovery-messages must be more than twice --recovery-log-entries: only then "
            "do the nodes compact their logs, and the wiped node needs a snapshot"
        )


def _paths(args: argparse.Namespace) -> tuple[str, ...] | None:
    if args.unary:
        return ("unary",)
    if not args.paths:
        return None
    return tuple(dict.fromkeys(p.strip() for p in args.paths.split(",") if p.strip()))


def _clients(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    levels = tuple(int(c) for c in text.split(","))
    if not levels or min(levels) < 1:
        raise ValueError(text)
    return levels


def plan_from_args(args: argparse.Namespace) -> Plan:
    """Defaults, then --quick, then each explicit flag."""
    plan = dataclasses.replace(Plan(parts=_parts(args)), **(QUICK if args.quick else {}))
    explicit = {
        "paths": _paths(args),
        "clients": _clients(args.clients),
        "messages": args.messages,
        "failover_runs": args.failover_runs,
        "memory_messages": args.memory_messages,
        "scale_messages": args.scale_messages,
        "load_clients": args.load_clients,
        "catchup_bytes": args.catchup_mib << 20 if args.catchup_mib else None,
        "recovery_messages": args.recovery_messages,
        "recovery_log_entries": args.recovery_log_entries,
    }
    return dataclasses.replace(plan, **{k: v for k, v in explicit.items() if v is not None})
