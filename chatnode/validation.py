"""Input rules of docs/api.md, "Validation and errors", checked before anything is proposed."""

from __future__ import annotations

from proto.errors import InvalidArgument
from proto.limits import (
    BODY_MAX_BYTES,
    CLIENT_LABEL_MAX_CHARS,
    IDS_MAX,
    PASSWORD_MAX_BYTES,
    PASSWORD_MIN_BYTES,
    PATTERN_MAX_CHARS,
    REQUEST_ID_MAX_CHARS,
    SESSION_ID_RE,
    USERNAME_RE,
)


def username(value: str, field: str = "username") -> str:
    if not USERNAME_RE.fullmatch(value):
        raise InvalidArgument(
            f"{field} must be 1 to 32 characters of letters, digits, '_', '.' or '-'"
        )
    return value


def password(value: str) -> str:
    if not PASSWORD_MIN_BYTES <= len(value.encode()) <= PASSWORD_MAX_BYTES:
        raise InvalidArgument(
            f"password must be {PASSWORD_MIN_BYTES} to {PASSWORD_MAX_BYTES} bytes long"
        )
    return value


def body(value: str) -> str:
    if not 1 <= len(value.encode()) <= BODY_MAX_BYTES:
        raise InvalidArgument(f"message body must be 1 to {BODY_MAX_BYTES} bytes of UTF-8")
    return value


def request_id(value: str) -> str:
    if len(value) > REQUEST_ID_MAX_CHARS:
        raise InvalidArgument(f"request_id must be at most {REQUEST_ID_MAX_CHARS} characters")
    return value


def client_label(value: str) -> str:
    """Shown to the user in every session list: printable, one line, short."""
    if len(value) > CLIENT_LABEL_MAX_CHARS or not value.isprintable():
        raise InvalidArgument(
            f"client_label must be at most {CLIENT_LABEL_MAX_CHARS} printable characters"
        )
    return value


def session_id(value: str) -> str:
    if not SESSION_ID_RE.fullmatch(value):
        raise InvalidArgument("session_id must be 32 lowercase hex digits, as ListSessions gives")
    return value


def message_id(value: int, field: str) -> int:
    """A message id bound: ids are log indexes, which SQLite stores as signed 64-bit."""
    if value >= 2**63:
        raise InvalidArgument(f"{field} must be below 2**63")
    return value


def pattern(value: str) -> str:
    if len(value) > PATTERN_MAX_CHARS:
        raise InvalidArgument(f"pattern must be at most {PATTERN_MAX_CHARS} characters")
    return value


def message_ids(values: list[int]) -> tuple[int, ...]:
    if len(values) > IDS_MAX:
        raise InvalidArgument(f"at most {IDS_MAX} message ids per call")
    return tuple(values)


def clamp(value: int, default: int, maximum: int) -> int:
    """0 means 'use the default'; over the maximum is clamped, not an error."""
    return min(value or default, maximum)
