"""What the command-line programs share: argument errors and the member list."""

from __future__ import annotations

import argparse
import os
from typing import NoReturn

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
