"""The operations the chat state machine applies, their wire form in the log, and the
replies applying them answers.

Everything that is not a pure function of the replicated state is decided by
the leader *before* proposing and travels inside the op: the wall-clock time,
password hashes, session-token hashes, whether the recipient is online. So every
replica that applies the same entries computes the same state and the same
replies, and a new leader answers a retried request exactly as the old one did.

Ops are JSON objects (readable with ``sqlite3`` and ``jq`` when an operator
inspects the log); bytes travel as hex. msgspec encodes and decodes them, with
their field types checked, at a microsecond or so each. Fields added after an op kind first
shipped have defaults, so entries written before them still decode: the log
outlives releases.

Sessions expire (``--session-ttl``). The leader computes each session's deadline
from its own clock and its own TTL and puts the deadline in the op; ops on a
session carry the leader's ``now_ms`` so every replica judges expiry by the same
clock, whatever its own clock or flag says. ``session_deadline_ms`` on those ops
renews the session (0: leave it); see :mod:`chatnode.service` for when.

Every op a client's mutating call proposes carries that call's ``request_id``
("" when the client sent none, and in entries from before a kind had one): the
state machine answers a retry from the reply it stored for the first attempt,
keyed by user, request_id and kind (see :mod:`chatnode.state`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

import msgspec


@dataclass(frozen=True, slots=True)
class CreateAccount:
    kind: ClassVar[str] = "create_account"
    username: str
    password_hash: str
    request_id: str
    now_ms: int


@dataclass(frozen=True, slots=True)
class Login:
    """Open a session. ``sealed_token`` is the token encrypted under a key only the
    password derives (see :mod:`chatnode.passwords`), so a retried Login can be
    answered with the same token while the database holds no usable token.

    ``password_hash`` is the hash whose key sealed the token: the one the leader
    verified, or the upgrade the leader made of it, which then replaces the
    account's (empty in entries from before upgrades: keep the account's).
    ``session_deadline_ms`` is when the session expires unless used (0 in
    entries from before expiry: the legacy TTL after now_ms)."""

    kind: ClassVar[str] = "login"
    username: str
    account_id: int
    token_hash: str
    sealed_token: str
    request_id: str
    now_ms: int
    password_hash: str = ""
    session_deadline_ms: int = 0
    client_label: str = ""


@dataclass(frozen=True, slots=True)
class Logout:
    """End one session. ``now_ms`` judges the session's expiry and dates the stored reply
    (0 in entries from before Logout had a request_id)."""

    kind: ClassVar[str] = "logout"
    token_hash: str
    now_ms: int = 0
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class EndSession:
    """End one of the caller's sessions, named by its token hash (the leader resolved the
    session id the client gave). The state ends it only if it is the caller's account's:
    a guessed or foreign id is NOT_FOUND, on every replica alike."""

    kind: ClassVar[str] = "end_session"
    token_hash: str
    ended_token_hash: str
    now_ms: int
    request_id: str
    session_deadline_ms: int = 0


@dataclass(frozen=True, slots=True)
class SendMessage:
    kind: ClassVar[str] = "send_message"
    token_hash: str
    recipient: str
    body: str
    request_id: str
    now_ms: int
    recipient_online: bool
    session_deadline_ms: int = 0


@dataclass(frozen=True, slots=True)
class ReadMessages:
    """Return and mark read the oldest unread messages (a mutation: it sets read flags)."""

    kind: ClassVar[str] = "read_messages"
    token_hash: str
    limit: int
    max_bytes: int
    now_ms: int = 0
    session_deadline_ms: int = 0
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class MarkRead:
    kind: ClassVar[str] = "mark_read"
    token_hash: str
    message_ids: tuple[int, ...] = field(default_factory=tuple)
    now_ms: int = 0
    session_deadline_ms: int = 0
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class DeleteMessages:
    kind: ClassVar[str] = "delete_messages"
    token_hash: str
    message_ids: tuple[int, ...] = field(default_factory=tuple)
    now_ms: int = 0
    session_deadline_ms: int = 0
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class DeleteAccount:
    """Delete the account the session belongs to, if it is still ``account_id``
    (the leader checked the password against that account)."""

    kind: ClassVar[str] = "delete_account"
    token_hash: str
    account_id: int
    now_ms: int = 0
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class Touch:
    """Renew a session used only by read-only calls (ListAccounts, Subscribe), which
    otherwise write nothing to the log."""

    kind: ClassVar[str] = "touch"
    token_hash: str
    now_ms: int
    session_deadline_ms: int


RequestOp = (
    CreateAccount
    | Login
    | Logout
    | EndSession
    | SendMessage
    | ReadMessages
    | MarkRead
    | DeleteMessages
    | DeleteAccount
)
Op = RequestOp | Touch
"""The ops that carry a request_id: every one a client's mutating call proposes."""

OP_TYPES: dict[str, type] = {
    cls.kind: cls
    for cls in (
        CreateAccount,
        Login,
        Logout,
        EndSession,
        SendMessage,
        ReadMessages,
        MarkRead,
        DeleteMessages,
        DeleteAccount,
        Touch,
    )
}


class MalformedOp(ValueError):
    """A log payload that is not a known op: a bug or corruption, never user input."""


class _Tag(msgspec.Struct):
    op: str


_TAG = msgspec.json.Decoder(_Tag)
_DECODERS = {kind: msgspec.json.Decoder(cls) for kind, cls in OP_TYPES.items()}
_JSON = msgspec.json.Encoder()


def encode(op: Op) -> bytes:
    """``{"op": kind, field: value, ...}``, the fields in their declared order."""
    fields_json = _JSON.encode(op)
    separator = b'",' if len(fields_json) > 2 else b'"'
    return b'{"op":"' + op.kind.encode() + separator + fields_json[1:]


def decode(payload: bytes) -> Op:
    """The op a payload holds, its fields type-checked (but not their ranges: see
    chatnode.state): every replica decodes every entry, so the codec is compiled
    (msgspec) rather than json and a dict per op."""
    try:
        return _DECODERS[_TAG.decode(payload).op].decode(payload)
    except (msgspec.DecodeError, KeyError) as exc:
        raise MalformedOp(f"undecodable op payload: {exc}") from exc


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as the state holds it, and as a reply or a stream carries it."""

    id: int
    sender: str
    recipient: str
    body: str
    sent_at_ms: int
    read: bool


# -- replies: what applying one op answers, one type per kind of op that answers anything
#
# A reply is stored (see chatnode.state) and a retry is answered from it, so its JSON form
# outlives releases like an op's: fields keep their names and order, and a field added
# after a reply first shipped has a default, so replies stored before it still decode.


@dataclass(frozen=True, slots=True, kw_only=True)
class LoggedIn:
    """Login's reply. ``seal_hash`` names the hash whose key sealed the token ("" in
    replies from before password upgrades: the account's). Keyword-only, as it kept its
    place in the stored form when it gained a default."""

    sealed_token: str
    seal_hash: str = ""
    unread_count: int
    last_message_id: int


@dataclass(frozen=True, slots=True)
class Sent:
    """SendMessage's reply. ``sender``, ``recipient_id`` and ``sent_at_ms`` are what live
    delivery rebuilds the message from (the last two 0 in replies stored before delivery
    was keyed by account id: a stored reply is never delivered)."""

    message_id: int
    recipient_online: bool
    sender: str
    recipient_id: int = 0
    sent_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class MessagesRead:
    """ReadMessages' reply as applied: the batch, marked read, and the unread left."""

    messages: tuple[StoredMessage, ...]
    remaining_unread: int

    def by_id(self) -> ReadIds:
        """The batch as stored."""
        return ReadIds(tuple(message.id for message in self.messages), self.remaining_unread)


@dataclass(frozen=True, slots=True)
class ReadIds:
    """ReadMessages' reply as stored: the batch by message id, so a stored reply holds no
    copy of message text and answers a retry in O(1) however large the batch was."""

    message_ids: tuple[int, ...]
    remaining_unread: int


@dataclass(frozen=True, slots=True)
class ReadAgain:
    """A retried ReadMessages' reply: its stored batch, which the leader reads again as
    ``reader`` (the name the reply was stored under), off the state machine's path."""

    reader: str
    batch: ReadIds


@dataclass(frozen=True, slots=True)
class Marked:
    """MarkRead's reply."""

    marked_count: int


@dataclass(frozen=True, slots=True)
class MessagesDeleted:
    """DeleteMessages' reply."""

    deleted_count: int


@dataclass(frozen=True, slots=True)
class AccountDeleted:
    """DeleteAccount's reply: whose streams close (``account_id`` 0 in replies stored
    before streams were keyed by account id: none)."""

    username: str
    account_id: int = 0


Reply = (
    LoggedIn | Sent | MessagesRead | ReadIds | ReadAgain | Marked | MessagesDeleted | AccountDeleted
)

_STORED_REPLY_TYPES: dict[str, type[Reply]] = {
    Login.kind: LoggedIn,
    SendMessage.kind: Sent,
    ReadMessages.kind: ReadIds,
    MarkRead.kind: Marked,
    DeleteMessages.kind: MessagesDeleted,
    DeleteAccount.kind: AccountDeleted,
}
"""The type a stored success of each kind decodes to; the other kinds reply with nothing."""

_R = TypeVar("_R", bound=Reply)


@dataclass(frozen=True, slots=True)
class Result:
    """What applying one op answered: a reply, or an error code from docs/api.md,
    "Validation and errors".

    ``code`` is the name of a gRPC status code ("ALREADY_EXISTS", ...) or "" on
    success; ``value`` is the reply of the op's kind, None for kinds that reply with
    nothing and for errors.
    """

    code: str = ""
    message: str = ""
    value: Reply | None = None

    @property
    def ok(self) -> bool:
        return not self.code

    def reply(self, kind: type[_R]) -> _R:
        """The reply, which the op's kind says is a ``kind``: anything else is a bug."""
        if not isinstance(self.value, kind):
            raise TypeError(f"expected a {kind.__name__} reply, got {self!r}")
        return self.value

    def to_json(self) -> str:
        """The stored form: ``{"code", "message", "value"}``, value ``{}`` when None."""
        value = _NOTHING if self.value is None else self.value
        return _JSON.encode({"code": self.code, "message": self.message, "value": value}).decode()

    @classmethod
    def from_json(cls, text: str, kind: str) -> Result:
        """A reply stored for an op of ``kind``: its JSON says nothing of its type."""
        stored = _STORED.decode(text)
        reply_type = _STORED_REPLY_TYPES.get(kind) if not stored.code else None
        value = _REPLY_DECODERS[reply_type].decode(stored.value) if reply_type else None
        return cls(stored.code, stored.message, value)


class _Stored(msgspec.Struct):
    code: str
    message: str
    value: msgspec.Raw


_NOTHING: dict[str, object] = {}
_STORED = msgspec.json.Decoder(_Stored)
_REPLY_DECODERS = {cls: msgspec.json.Decoder(cls) for cls in _STORED_REPLY_TYPES.values()}


def error(code: str, message: str) -> Result:
    return Result(code=code, message=message)
