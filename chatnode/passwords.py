"""Password hashing with scrypt, and sealing of session tokens for retried logins.

scrypt (memory-hard, in the standard library) derives 64 bytes from a password.
The first half is the stored verifier. The second half is never stored: it is a
key that only the password can re-derive. A Login that carries a request_id
stores its token sealed under that key, so a retry of the same Login (which
must resend the password) can be answered with the same token, while a stolen
database yields neither passwords nor usable tokens.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

SCRYPT_N = 2**14  # 16 MiB of memory per hash with r=8: ~50 ms on one core
SCRYPT_R = 8
SCRYPT_P = 1
_HALF = 32


@dataclass(frozen=True, slots=True)
class Verified:
    """The outcome of checking a password: the key that opens sealed tokens."""

    seal_key: bytes


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r, dklen=2 * _HALF
    )


def hash_password(password: str) -> str:
    """Return the encoded hash to store: ``scrypt$n$r$p$salt$verifier`` (hex)."""
    salt = secrets.token_bytes(16)
    derived = _derive(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${derived[:_HALF].hex()}"


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
