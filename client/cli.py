"""What the command-line programs share: argument errors and the member list."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import NoReturn

import grpc

LOCAL_CLUSTER = "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003"


class Parser(argparse.ArgumentParser):
    """argparse with API.md's exit rules: bad usage is one line on stderr and status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def add_cluster_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cluster",
        default=os.environ.get("CHAT_CLUSTER", LOCAL_CLUSTER),
        help="members as ID=HOST:PORT (or HOST:PORT), comma-separated (CHAT_CLUSTER; "
        f"default {LOCAL_CLUSTER})",
    )


def member_addresses(spec: str) -> list[str]:
    """The addresses in a member list; a client needs no ids to find the leader."""
    addresses = [item.strip().rpartition("=")[2] for item in spec.split(",") if item.strip()]
    for address in addresses:
        host, colon, port = address.rpartition(":")
        if not (host and colon and port.isdigit()):
            raise ValueError(f"bad member address {address!r}: expected HOST:PORT")
    if not addresses:
        raise ValueError("the member list is empty")
    return addresses


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


def channel_credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """TLS credentials from the --tls-* flags, or None for plaintext.

    Raises OSError if a file is unreadable, ValueError if the flags do not fit together.
    """
    if not args.tls_ca:
        if args.tls_cert or args.tls_key:
            raise ValueError("--tls-cert and --tls-key need --tls-ca")
        return None
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ValueError("--tls-cert and --tls-key go together")
    return grpc.ssl_channel_credentials(
        root_certificates=Path(args.tls_ca).read_bytes(),
        private_key=Path(args.tls_key).read_bytes() if args.tls_key else None,
        certificate_chain=Path(args.tls_cert).read_bytes() if args.tls_cert else None,
    )


def user_data_dir() -> Path:
    """Where a user's client files live: $XDG_DATA_HOME/chat, else ~/.local/share/chat."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "chat"
