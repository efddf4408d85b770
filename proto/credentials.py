"""Credentials for the peer and admin APIs, as they travel: shared by nodes and chatctl.

This is part of the wire contract (docs/api.md, "Authentication"), so it lives beside the
protos: the client side (``chatctl``) may not import server code.

A caller never sends the cluster secret itself. It sends a *role*
(``node/2`` for a member, ``admin`` for an operator) in metadata
``x-chat-role`` and ``HMAC-SHA256(secret, role)`` as hex in ``x-chat-auth``.
Binding the role into the tag means a tag captured off a plaintext link
speaks for that one role and never reveals the secret. Under mutual TLS the
same roles appear as certificate SAN URIs, ``chat://node/2`` and ``chat://admin``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

ROLE_KEY = "x-chat-role"
TAG_KEY = "x-chat-auth"
ADMIN_ROLE = "admin"
URI_PREFIX = "chat://"
MIN_SECRET_BYTES = 32

Metadata = tuple[tuple[str, str], ...]


def node_role(node_id: int) -> str:
    return f"node/{node_id}"


class SecretError(ValueError):
    """The secret file is missing, unreadable or too short (bad usage: exit 2)."""


class ClusterSecret:
    """The shared key, and the role tags made with it."""

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_SECRET_BYTES:
            raise SecretError(f"the cluster secret needs at least {MIN_SECRET_BYTES} bytes")
        self._key = key

    @classmethod
    def load(cls, path: Path) -> ClusterSecret:
        """Read a secret file; whitespace around the secret is ignored."""
        try:
            key = path.read_bytes().strip()
        except OSError as exc:
            raise SecretError(f"cannot read cluster secret {path}: {exc.strerror}") from None
        if len(key) < MIN_SECRET_BYTES:
            raise SecretError(
                f"cluster secret {path} holds {len(key)} bytes; it needs at least "
                f"{MIN_SECRET_BYTES} (make one with `chatctl secret new FILE`)"
            )
        return cls(key)

    def tag(self, role: str) -> str:
        return hmac.new(self._key, role.encode(), hashlib.sha256).hexdigest()

    def metadata(self, role: str) -> Metadata:
        """What a caller sends on each call to speak as ``role``."""
        return ((ROLE_KEY, role), (TAG_KEY, self.tag(role)))

    def verify(self, role: str, tag: str) -> bool:
        return hmac.compare_digest(self.tag(role).encode(), tag.encode())


def write_new_secret(path: Path) -> None:
    """Write 32 random bytes as 64 hex characters, readable by the owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32) + "\n")
