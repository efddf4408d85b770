"""A member's address: where its peers reach it, and where chat clients do.

A member serves everything on one ``HOST:PORT`` (docs/api.md, "Member addresses"), or
keeps peers and operators apart from chat users on two listeners, written
``PEER_HOST:PORT/CLIENT_HOST:PORT``. The whole string is the member's address in the
replicated configuration, so every node knows both listeners of every member: it
dials peers at the first and points chat clients (``leader-address``, ``LeaderInfo``)
to the second. ``/`` cannot occur in a host, a bracketed IPv6 address or a port.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_ADDRESS_CHARS", "MemberAddress", "client_address", "peer_address"]

SEPARATOR = "/"
MAX_ADDRESS_CHARS = 600  # two DNS names of 253 characters with their ports, and room


@dataclass(frozen=True, slots=True)
class MemberAddress:
    peer: str
    client: str

    @classmethod
    def parse(cls, text: str) -> MemberAddress:
        """Raises ValueError naming the part that is not ``HOST:PORT``."""
        if len(text) > MAX_ADDRESS_CHARS:
            raise ValueError(f"member address is over {MAX_ADDRESS_CHARS} characters")
        peer, separated, client = text.partition(SEPARATOR)
        for part in (peer, client) if separated else (peer,):
            _check_host_port(part)
        return cls(peer, client if separated else peer)

    @property
    def split(self) -> bool:
        """Peers and chat clients use different listeners."""
        return self.peer != self.client

    def __str__(self) -> str:
        return f"{self.peer}{SEPARATOR}{self.client}" if self.split else self.peer


def peer_address(member_address: str) -> str:
    """Where peers and operators reach the member (its address, in the one-port layout)."""
    return member_address.partition(SEPARATOR)[0]


def client_address(member_address: str) -> str:
    """Where chat clients reach the member (its address, in the one-port layout)."""
    peer, _, client = member_address.partition(SEPARATOR)
    return client or peer


def _check_host_port(text: str) -> None:
    host, colon, port = text.rpartition(":")
    if not (
        host
        and colon
        and SEPARATOR not in host
        and port.isascii()
        and port.isdigit()
        and 0 < int(port) < 65536
    ):
        raise ValueError(f"bad member address {text!r}: expected HOST:PORT")
