"""The ``chatnode`` command: run one node of the cluster (docs/api.md, "chatnode").

Every flag also reads an environment variable (``CHAT_NODE_ID``,
``CHAT_CLUSTER``, ...) so systemd units can keep configuration in an env file.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import os
import signal
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from chatnode import logs
from chatnode.admission import DEFAULT_RATE
from chatnode.server import ChatNode, ConfigError, NodeConfig, TlsFiles
from chatnode.supervision import Notifier
from proto.addresses import MemberAddress
from proto.cli import Parser, add_version_flag, parse_cluster
from proto.credentials import ClusterSecret, SecretError

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path.home() / ".local" / "share" / "chat"


_DURATION_UNITS_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION_MAX_MS = 3650 * 86_400_000  # ten years: deadlines stay far inside 64 bits


def parse_duration_ms(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``12h``, ``30d`` -> milliseconds (plain numbers are seconds)."""
    text = text.strip()
    number, unit = (text[:-1], text[-1]) if text[-1:] in _DURATION_UNITS_MS else (text, "s")
    if not (number.isascii() and number.isdigit() and int(number) > 0):
        raise ValueError(f"bad duration {text!r}: expected a positive whole number of s, m, h or d")
    if int(number) * _DURATION_UNITS_MS[unit] > _DURATION_MAX_MS:
        raise ValueError(f"duration {text!r} is over the maximum of 3650d")
    return int(number) * _DURATION_UNITS_MS[unit]


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"CHAT_{name}", default)


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="chatnode", description="Run one node of the replicated chat service.")
    add_version_flag(p)
    p.add_argument("--id", type=int, default=_env("NODE_ID"), help="this node's id (CHAT_NODE_ID)")
    p.add_argument(
        "--cluster",
        default=_env("CLUSTER"),
        help="all members: 1=HOST:PORT,2=HOST:PORT,... or, with a peer and a client "
        "listener each, 1=PEER_HOST:PORT/CLIENT_HOST:PORT,... (CHAT_CLUSTER)",
    )
    p.add_argument(
        "--data-dir",
        default=_env("DATA_DIR"),
        help=f"where this node keeps its data (CHAT_DATA_DIR; default {DEFAULT_DATA_DIR}/node-ID)",
    )
    p.add_argument(
        "--listen",
        default=_env("LISTEN", ""),
        help="bind address if not the one in --cluster, e.g. 0.0.0.0:7001 (CHAT_LISTEN)",
    )
    p.add_argument(
        "--listen-peer",
        default=_env("LISTEN_PEER", ""),
        help="with PEER/CLIENT addresses in --cluster: where the peer listener (replication "
        "and admin) binds, if not at PEER (CHAT_LISTEN_PEER)",
    )
    p.add_argument(
        "--listen-client",
        default=_env("LISTEN_CLIENT", ""),
        help="with PEER/CLIENT addresses in --cluster: where the client listener (the chat "
        "API, health, reflection) binds, if not at CLIENT (CHAT_LISTEN_CLIENT)",
    )
    p.add_argument("--lease-ms", type=int, default=_env("LEASE_MS", "1000"), help="(CHAT_LEASE_MS)")
    p.add_argument(
        "--heartbeat-ms", type=int, default=_env("HEARTBEAT_MS", "100"), help="(CHAT_HEARTBEAT_MS)"
    )
    p.add_argument(
        "--min-insync",
        type=int,
        default=_env("MIN_INSYNC", "1"),
        help="in-sync replicas needed to commit; > N/2 selects quorum mode (CHAT_MIN_INSYNC)",
    )
    p.add_argument(
        "--join",
        action="store_true",
        default=_env("JOIN", "") not in ("", "0"),
        help="this node joins a running cluster (after `chatctl add-member`) instead of "
        "being one of its initial members (CHAT_JOIN=1)",
    )
    p.add_argument(
        "--log-keep-entries",
        type=int,
        default=_env("LOG_KEEP_ENTRIES", "10000"),
        help="applied entries kept in the log for lagging followers; older ones are compacted "
        "and such followers get a snapshot instead (CHAT_LOG_KEEP_ENTRIES)",
    )
    p.add_argument("--tls-cert", default=_env("TLS_CERT"), help="PEM certificate (CHAT_TLS_CERT)")
    p.add_argument("--tls-key", default=_env("TLS_KEY"), help="PEM private key (CHAT_TLS_KEY)")
    p.add_argument(
        "--tls-ca", default=_env("TLS_CA"), help="CA that signs clients and peers (CHAT_TLS_CA)"
    )
    p.add_argument(
        "--client-tls-cert",
        default=_env("CLIENT_TLS_CERT"),
        help="PEM certificate of the client listener: chat users verify it and present none "
        "(CHAT_CLIENT_TLS_CERT)",
    )
    p.add_argument(
        "--client-tls-key",
        default=_env("CLIENT_TLS_KEY"),
        help="its private key (CHAT_CLIENT_TLS_KEY)",
    )
    p.add_argument(
        "--cluster-secret-file",
        metavar="FILE",
        default=_env("CLUSTER_SECRET_FILE"),
        help="shared secret (at least 32 bytes, e.g. `chatctl secret new FILE`) that peer and "
        "admin calls must prove; needed for more than one member unless peers use mutual TLS "
        "(CHAT_CLUSTER_SECRET_FILE)",
    )
    p.add_argument(
        "--session-ttl",
        default=_env("SESSION_TTL", "30d"),
        help="sessions unused this long expire: seconds, or with s, m, h or d, e.g. 12h "
        "(CHAT_SESSION_TTL; default 30d)",
    )
    p.add_argument(
        "--ops-per-s",
        type=float,
        default=_env("OPS_PER_S", str(DEFAULT_RATE)),
        help="proposals a second the leader admits from all accounts together, split evenly "
        f"between the active ones (CHAT_OPS_PER_S; default {DEFAULT_RATE:g})",
    )
    p.add_argument(
        "--metrics-listen",
        default=_env("METRICS_LISTEN", ""),
        help="serve Prometheus metrics over HTTP at HOST:PORT (CHAT_METRICS_LISTEN; off if empty)",
    )
    p.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"), help="(CHAT_LOG_LEVEL)")
    p.add_argument(
        "--log-format",
        default=_env("LOG_FORMAT", "text"),
        metavar="{text,json}",
        help="text lines, or one JSON object a line for a log pipeline; the fields and events "
        "are in docs/operations.md (CHAT_LOG_FORMAT; default text)",
    )
    return p


def config_from_args(argv: Sequence[str] | None = None) -> NodeConfig:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.id is None or args.cluster is None:
        parser.error("--id and --cluster are required (or CHAT_NODE_ID and CHAT_CLUSTER)")
    try:
        cluster = parse_cluster(args.cluster)
    except ValueError as exc:
        parser.error(str(exc))
    if args.id not in cluster:
        parser.error(f"--id {args.id} is not a member of --cluster")
    if not 1 <= args.min_insync <= len(cluster):
        parser.error(f"--min-insync must be between 1 and {len(cluster)}")
    if not 0 < args.heartbeat_ms < args.lease_ms:
        parser.error("--heartbeat-ms must be positive and shorter than --lease-ms")
    if args.log_keep_entries < 1:
        parser.error("--log-keep-entries must be at least 1")
    if not args.ops_per_s > 0:
        parser.error("--ops-per-s must be positive")
    try:
        session_ttl_ms = parse_duration_ms(args.session_ttl)
    except ValueError as exc:
        parser.error(f"--session-ttl: {exc}")
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    if bool(args.client_tls_cert) != bool(args.client_tls_key):
        parser.error("--client-tls-cert and --client-tls-key go together")
    why = _listener_misuse(args, MemberAddress.parse(cluster[args.id]))
    if why:
        parser.error(why)
    tls = None
    if args.tls_cert:
        tls = TlsFiles(
            Path(args.tls_cert), Path(args.tls_key), Path(args.tls_ca) if args.tls_ca else None
        )
    client_tls = None
    if args.client_tls_cert:
        client_tls = TlsFiles(Path(args.client_tls_cert), Path(args.client_tls_key))
    secret = None
    if args.cluster_secret_file:
        try:
            secret = ClusterSecret.load(Path(args.cluster_secret_file))
        except SecretError as exc:
            parser.error(str(exc))
    if (len(cluster) > 1 or args.join) and secret is None and not (tls and tls.ca):
        parser.error(
            "a node with peers needs --cluster-secret-file (or mutual TLS: --tls-cert, "
            "--tls-key and --tls-ca with member certificates) so strangers cannot speak for it"
        )
    try:
        log_fields = logs.configure(args.log_format, args.log_level, args.id)
    except ValueError as exc:
        parser.error(str(exc))
    return NodeConfig(
        node_id=args.id,
        cluster=cluster,
        data_dir=Path(args.data_dir) if args.data_dir else DEFAULT_DATA_DIR / f"node-{args.id}",
        listen=args.listen,
        listen_peer=args.listen_peer,
        listen_client=args.listen_client,
        lease_ms=args.lease_ms,
        heartbeat_ms=args.heartbeat_ms,
        min_insync=args.min_insync,
        log_keep_entries=args.log_keep_entries,
        join=args.join,
        tls=tls,
        client_tls=client_tls,
        metrics_listen=args.metrics_listen,
        cluster_secret=secret,
        session_ttl_ms=session_ttl_ms,
        ops_per_s=args.ops_per_s,
        log_fields=log_fields,
    )


def _listener_misuse(args: argparse.Namespace, member: MemberAddress) -> str:
    """Why the listener flags do not fit this node's address in --cluster, or ''."""
    binds = {
        "--listen": args.listen,
        "--listen-peer": args.listen_peer,
        "--listen-client": args.listen_client,
    }
    two = [f for f, v in binds.items() if v and f != "--listen"]
    two += ["--client-tls-cert"] if args.client_tls_cert else []
    if not member.split and two:
        return f"{two[0]} needs two listeners: give this node PEER/CLIENT in --cluster"
    if member.split and args.listen:
        return "--listen is for one listener: use --listen-peer and --listen-client"
    for flag, value in binds.items():
        try:
            one = not value or not MemberAddress.parse(value).split
        except ValueError:
            one = False
        if not one:
            return f"{flag}: bad address {value!r}: expected HOST:PORT"
    return ""


class Fatal(Exception):
    """A background task died: the node stops and exits 1 so its supervisor restarts it."""


async def serve(config: NodeConfig) -> None:
    """Run until SIGTERM or SIGINT, then drain and stop; raise Fatal if a task dies."""
    node = ChatNode(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    systemd = Notifier.from_environment()
    pings = asyncio.create_task(systemd.keep_alive(), name="watchdog")
    await node.start()
    coord = node.coordinator
    status = asyncio.create_task(
        systemd.report_leadership(coord.leader_changes(), coord.status), name="systemd-status"
    )
    systemd.send(READY=1)
    stopping = asyncio.ensure_future(stop.wait())
    failing = asyncio.ensure_future(node.failure())
    await asyncio.wait((stopping, failing), return_when=asyncio.FIRST_COMPLETED)
    if failing.done():
        raise Fatal(failing.result())
    failing.cancel()
    status.cancel()
    systemd.send(STOPPING=1, STATUS="draining calls")
    log.info("stopping: draining calls", extra={"event": "stopping"})
    await node.stop()
    pings.cancel()
    systemd.close()


def main(argv: Sequence[str] | None = None) -> None:
    config = config_from_args(argv)
    # The watchdog ends a stuck node with SIGABRT: first, every thread's stack to stderr
    # (the journal), which shows where the event loop was stuck.
    faulthandler.enable()
    try:
        asyncio.run(serve(config))
    except (ConfigError, OSError) as exc:
        log.critical("%s", exc, extra={"event": "start_failed"})
        sys.exit(1)
    except sqlite3.Error as exc:
        log.critical(
            "cannot use the data in %s: %s", config.data_dir, exc, extra={"event": "start_failed"}
        )
        sys.exit(1)
    except Fatal as exc:
        log.critical("fatal: %s; exiting for a restart", exc, extra={"event": "fatal"})
        os._exit(1)  # the event loop may be wedged by what failed: do not wait on it


if __name__ == "__main__":
    main()
