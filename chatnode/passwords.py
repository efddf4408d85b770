"""Password hashing with scrypt, where it runs, and sealing of tokens for retried logins.

scrypt (memory-hard, in the standard library) derives 64 bytes from a password.
The first half is the stored verifier. The second half is never stored: it is a
key that only the password can re-derive. A Login that carries a request_id
stores its token sealed under that key, so a retry of the same Login (which
must resend the password) can be answered with the same token, while a stolen
database yields neither passwords nor usable tokens.

The cost follows current guidance (N = 2^15, r = 8, p = 1: 32 MiB, ~100 ms).
Hashes made with other parameters (N = 2^14 before) still verify, and
:func:`needs_rehash` tells the leader to replace them on the next successful
login. The seal key belongs to one encoded hash: a retried Login must unseal
with the key of the hash its first attempt sealed under, which is why the Login
result records that hash (see :mod:`chatnode.service`).

Hashing runs in a :class:`HashPool`: a hash holds a core for ~100 ms, so an
unbounded queue of them would let a flood of Logins pin memory (32 MiB per
running hash) and delay every other caller's login without limit. The pool
runs a fixed number of hashes at a time in worker threads (hashlib.scrypt
releases the GIL, so the event loop keeps serving heartbeats meanwhile) and
admits only a bounded number waiting; beyond that callers are refused at once.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from proto.errors import ResourceExhausted

T = TypeVar("T")

SCRYPT_N = 2**15  # 32 MiB of memory per hash with r=8: ~100 ms on one core
SCRYPT_R = 8
SCRYPT_P = 1
_HALF = 32

HASH_WORKERS = min(2, max(1, (os.cpu_count() or 1) // 2))
"""Hashes that run at once: at most half the cores, so the event loop (and, on a
small machine, the other replicas) keep CPU to run on."""

HASH_ADMITTED = 32
"""Hashes running or waiting at most; the next concurrent caller is refused at once.
At ~100 ms a hash, the last one admitted waits at most 3.2 s divided by the workers."""

BUSY = "too many password checks in progress; retry in a moment"


@dataclass(frozen=True, slots=True)
class Verified:
    """The outcome of checking a password: the key that opens sealed tokens."""

    seal_key: bytes


@dataclass(frozen=True, slots=True)
class Hashed:
    """A new encoded hash to store, and the seal key that goes with it."""

    encoded: str
    seal_key: bytes


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r, dklen=2 * _HALF
    )


def hash_password(password: str) -> Hashed:
    """A fresh hash at the current parameters: ``scrypt$n$r$p$salt$verifier`` (hex)."""
    salt = secrets.token_bytes(16)
    derived = _derive(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    encoded = f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${derived[:_HALF].hex()}"
    return Hashed(encoded, derived[_HALF:])


def verify_password(password: str, encoded: str) -> Verified | None:
    """Check password against a stored hash; None when it does not match."""
    try:
        scheme, n, r, p, salt, verifier = encoded.split("$")
        if scheme != "scrypt":
            return None
        derived = _derive(password, bytes.fromhex(salt), int(n), int(r), int(p))
    except ValueError:
        return None
    if not hmac.compare_digest(derived[:_HALF], bytes.fromhex(verifier)):
        return None
    return Verified(seal_key=derived[_HALF:])


def needs_rehash(encoded: str) -> bool:
    """Whether a verified hash was made with other parameters than the current ones."""
    return encoded.split("$")[:4] != ["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P)]


class HashPool:
    """Runs password hashing off the event loop, a bounded amount at a time."""

    def __init__(self, workers: int = HASH_WORKERS, admitted: int = HASH_ADMITTED) -> None:
        self._io = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hash")
        self._limit = admitted
        self._admitted = 0

    @property
    def admitted(self) -> int:
        """Hashes running or waiting now."""
        return self._admitted

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """fn(*args) in a hashing thread, or ResourceExhausted at once if the pool is full."""
        if self._admitted >= self._limit:
            raise ResourceExhausted(BUSY)
        self._admitted += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)
        finally:
            self._admitted -= 1

    def close(self) -> None:
        """Drop waiting hashes and let the running ones finish."""
        self._io.shutdown(wait=True, cancel_futures=True)


def new_session_token() -> str:
    """A fresh bearer token: 256 random bits, URL-safe text."""
    return base64.urlsafe_b64encode(secrets.token_bytes(_HALF)).decode().rstrip("=")


def token_hash(token: str) -> str:
    """What the database keeps of a token. A fast hash suffices: tokens carry 256 bits."""
    return hashlib.sha256(token.encode()).hexdigest()


def _xor_pad(seal_key: bytes, request_id: str, data: bytes) -> bytes:
    """XOR data with an HMAC-derived pad unique to (key, request_id): its own inverse."""
    pad = b""
    counter = 0
    while len(pad) < len(data):
        block = f"login-token:{counter}:{request_id}".encode()
        pad += hmac.new(seal_key, block, hashlib.sha256).digest()
        counter += 1
    return bytes(a ^ b for a, b in zip(data, pad, strict=False))


def seal_token(seal_key: bytes, request_id: str, token: str) -> str:
    """Encrypt token for the op log (hex text)."""
    return _xor_pad(seal_key, request_id, token.encode()).hex()


def unseal_token(seal_key: bytes, request_id: str, sealed: str) -> str:
    return _xor_pad(seal_key, request_id, bytes.fromhex(sealed)).decode()
