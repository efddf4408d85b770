"""What the three programs' command lines share: the ``--cluster`` syntax and the exit rules.

``chatnode``, ``chat`` and ``chatctl`` all read a member list written the
same way (docs/api.md, "Member addresses") and all answer bad usage the same
way. It lives beside the protos, the shared-contract package, because
``chatnode`` may not import the client and the client may not import server
code; both import ``proto``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from proto.addresses import MemberAddress, client_address
from proto.release import version

__all__ = [
    "Member",
    "Parser",
    "add_version_flag",
    "member_addresses",
    "member_ids",
    "parse_cluster",
    "parse_members",
]


class Parser(argparse.ArgumentParser):
    """argparse with the exit rules of docs/api.md, "Exit codes": bad usage is one line on
    stderr and status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


class _PrintVersion(argparse.Action):
    """``--version``: the program and :func:`proto.release.version`, worked out only when
    asked (a checkout's answer runs git)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(parser.prog, version())
        parser.exit()


def add_version_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--version", action=_PrintVersion, help="print the version and the release, then exit"
    )


@dataclass(frozen=True, slots=True)
class Member:
    """One item of a member list: ``ID=ADDRESS``, or ``ADDRESS`` (id None), where ADDRESS is
    ``HOST:PORT`` or ``PEER_HOST:PORT/CLIENT_HOST:PORT`` (:mod:`proto.addresses`)."""

    id: int | None
    address: str


def parse_members(spec: str) -> list[Member]:
    """Every item of a comma-separated member list, in order.

    Raises ValueError naming the first item that is not ``[ID=]ADDRESS`` with ID >= 1.
    """
    members = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        node_id, sep, address = item.rpartition("=")
        MemberAddress.parse(address)
        if sep and not (node_id.isdigit() and int(node_id) > 0):
            raise ValueError(f"bad member id in {item!r}: expected ID=HOST:PORT with ID >= 1")
        members.append(Member(int(node_id) if sep else None, address))
    return members


def member_addresses(spec: str) -> list[str]:
    """Where a chat client calls the members (their client listeners); it needs no ids to
    find the leader."""
    addresses = [client_address(member.address) for member in parse_members(spec)]
    if not addresses:
        raise ValueError("the member list is empty")
    return addresses


def member_ids(spec: str) -> dict[int, str]:
    """The member addresses of the items that name an id, by id (items without one are
    left out)."""
    return {m.id: m.address for m in parse_members(spec) if m.id is not None}


def parse_cluster(spec: str) -> dict[int, str]:
    """A node's member list: every item names its id, once. ``1=h:p,2=h:p`` -> {1: 'h:p', ...}."""
    members: dict[int, str] = {}
    for member in parse_members(spec):
        if member.id is None:
            raise ValueError(
                f"bad cluster member {member.address!r}: expected ID=HOST:PORT with ID >= 1"
            )
        if member.id in members:
            raise ValueError(f"node id {member.id} appears twice in the cluster")
        members[member.id] = member.address
    if not members:
        raise ValueError("the cluster needs at least one member")
    return members
