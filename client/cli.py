"""The flags ``chat`` and ``chatctl`` share: the members to reach, TLS, the user's files.

The ``--cluster`` syntax and the exit rules are shared with ``chatnode`` too, so
they live in :mod:`proto.cli`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import grpc

from client.connect import tls_credentials

LOCAL_CLUSTER = "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003"


def add_cluster_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cluster",
        default=os.environ.get("CHAT_CLUSTER", LOCAL_CLUSTER),
        help="members as ID=ADDRESS (or ADDRESS), comma-separated, where ADDRESS is HOST:PORT "
        "or PEER_HOST:PORT/CLIENT_HOST:PORT (CHAT_CLUSTER; "
        f"default {LOCAL_CLUSTER})",
    )


def add_tls_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tls-ca",
        metavar="FILE",
        default=os.environ.get("CHAT_TLS_CA"),
        help="PEM certificate of the CA that signed the nodes; enables TLS (CHAT_TLS_CA)",
    )
    parser.add_argument(
        "--tls-cert",
        metavar="FILE",
        default=os.environ.get("CHAT_TLS_CERT"),
        help="client certificate, for nodes that require one (CHAT_TLS_CERT)",
    )
    parser.add_argument(
        "--tls-key",
        metavar="FILE",
        default=os.environ.get("CHAT_TLS_KEY"),
        help="private key of --tls-cert (CHAT_TLS_KEY)",
    )


def tls_from_args(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """TLS credentials from the --tls-* flags, or None for plaintext (see tls_credentials)."""
    return tls_credentials(args.tls_ca, args.tls_cert, args.tls_key)


def user_data_dir() -> Path:
    """Where a user's client files live: $XDG_DATA_HOME/chat, else ~/.local/share/chat."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "chat"
