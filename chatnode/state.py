"""The chat state machine: committed ops in, chat state (SQLite) and replies out.

Every replica applies the same ops in the same order, so everything here is a
pure function of the database and the op: no clock, no randomness, no Python
state that grows with users or messages. The leader put whatever is not
deterministic (time, hashes, presence) into the op before proposing it.

Identifiers come from the log: a message's id and an account's id are the log
index of the entry that created them, so they increase in commit order and a
re-registered name gets a new account id.

apply() checks only what the state itself needs to stay sound: field types,
64-bit integers, text SQLite can store, a positive read limit, a clock that is
not negative. The input policy of docs/api.md, "Validation and errors" (username
syntax, lengths) is the service's, checked before proposing; re-checking it here
would make the result of an old log entry depend on which release replays it.

Time is the cluster clock (:mod:`chatnode.cluster_clock`): each op carries the
time its leader stamped, and is judged at the later of that and the newest time
already applied (``meta.clock_ms``), so time in the state never goes backwards
and ``sent_at`` never decreases in id order, whatever order concurrent stamps
were proposed in.

Sessions expire. Each session row holds its deadline, decided by the leader
(the cluster time plus its ``--session-ttl``) and carried in the op, so replicas whose
flags or clocks differ still agree. An op on a session is judged by its time:
at or after the deadline the session is gone, exactly as if it
had been logged out. A renewal (``session_deadline_ms`` on the op) only ever
moves the deadline later. Expired sessions are deleted in bounded chunks as
new ones are opened, like expired request results; until then they only take
disk space, since no op can use them.

Exactly once. Every mutating op stores its reply, success or error, keyed by
(username, request_id, kind): a retry of the same kind of call by the same user
with the same id gets the stored reply and changes nothing, and the same id
used for two kinds of call names two different requests. An op on a session
also stores the session's token hash with its reply: a retry whose session is
gone (its first attempt was a Logout or DeleteAccount that ended it) is found
by that instead, and gets the first reply rather than UNAUTHENTICATED. A
ReadMessages reply is stored as its message ids; a retry is answered with
those ids (applying it costs the same whatever the batch held) and the leader
reads them again by id: the retry returns the same batch, and no copy of a
message's text outlives its deletion.
"""

from __future__ import annotations

import os
import re
import sqlite3
import sys
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self, assert_never, get_type_hints

import sqlite_utils

from chatnode.ops import (
    OP_TYPES,
    AccountDeleted,
    CreateAccount,
    DeleteAccount,
    DeleteMessages,
    EndSession,
    LoggedIn,
    Login,
    Logout,
    Marked,
    MarkRead,
    MessagesDeleted,
    MessagesRead,
    Op,
    ReadAgain,
    ReadIds,
    ReadMessages,
    RequestOp,
    Result,
    SendMessage,
    Sent,
    StoredMessage,
    Touch,
    error,
)

RESULT_TTL_MS = 24 * 60 * 60 * 1000
"""How long a reply stays stored for retries carrying the same request_id."""

PRUNE_CHUNK = 64
"""Expired rows removed per row stored: more than one, so the table always shrinks back."""

LIST_SCAN_ROWS = 10_000
"""Names one ListAccounts page examines at most, whatever its pattern matches."""

LEGACY_SESSION_TTL_MS = 30 * 24 * 60 * 60 * 1000
"""The lifetime of sessions opened before sessions had deadlines, counted from their
creation: for rows of an older database and Login entries without a deadline. Fixed
forever, so replaying an old log gives the same state whichever release replays it."""

_SessionOp = (
    Logout
    | EndSession
    | SendMessage
    | ReadMessages
    | MarkRead
    | DeleteMessages
    | DeleteAccount
    | Touch
)

WRONG_CREDENTIALS = "wrong username or password"
NO_SESSION = "unknown or logged-out session; log in again"
ACCOUNT_CHANGED = "this session's account no longer exists"
NO_SUCH_SESSION = "no such session of yours"

SESSION_ID_CHARS = 32
"""A session id is this many leading hex digits of the session's token hash (128 bits):
unique in practice, cheap to find by the primary key's order, and no use for logging in
(the token hash is a one-way hash of a 256-bit token, and the id only a part of it)."""

SESSIONS_LIST_MAX = 200
"""Sessions one ListSessions reply shows at most, the newest: bounded work per call."""

_INT64 = range(-(2**63), 2**63)
_ABOVE_ALL_TEXT = b""
"""SQLite sorts every BLOB after every TEXT value: an upper bound no username reaches."""


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    username: str
    password_hash: str


@dataclass(frozen=True, slots=True)
class Session:
    """A login: the account its token authenticates, and until when. ("Session" on its
    own means this throughout; the ``Session`` RPC is the stream a session's calls
    travel on, see :mod:`chatnode.session_stream`.)"""

    account_id: int
    username: str
    expires_ms: int  # leader time from which the session no longer authenticates

    def expired(self, now_ms: int) -> bool:
        return now_ms >= self.expires_ms


@dataclass(frozen=True, slots=True)
class NamePage:
    """A page of usernames, and the name to resume after ('' when none is left)."""

    names: list[str]
    resume_after: str


@dataclass(frozen=True, slots=True)
class SessionListing:
    """One open session as its owner sees it in ListSessions."""

    token_hash: str
    created_ms: int
    used_ms: int  # the cluster time of its last write, login or renewal
    client_label: str

    @property
    def session_id(self) -> str:
        return self.token_hash[:SESSION_ID_CHARS]


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Messages of one conversation, newest first, and the before_id of the next page
    (0 when this page reaches the first message)."""

    messages: list[StoredMessage]
    next_before_id: int


# -- read queries, shared by the writer and the readers -----------------------

_SESSION = """
    SELECT sessions.account_id, accounts.username, sessions.expires_ms
    FROM sessions JOIN accounts ON accounts.id = sessions.account_id
    WHERE sessions.token_hash = ?
"""
_ACCOUNT = "SELECT id, username, password_hash FROM accounts WHERE username = ?"
_STORED_RESULT = """
    SELECT username, result FROM request_results
    WHERE username = ? AND request_id = ? AND kind = ?
"""
_SESSION_RESULT = """
    SELECT username, result FROM request_results
    WHERE token_hash = ? AND request_id = ? AND kind = ?{and_newer}
    ORDER BY created_ms DESC, username DESC LIMIT 1
"""
"""Newest first: a token hash names one session at a time, but a log may reuse one
after its session ended, and the answer must not depend on row order."""
_SCAN_ACCOUNTS = """
    SELECT username, username GLOB :pattern FROM accounts
    WHERE username >= :low AND username < :high AND username > :after
    ORDER BY username LIMIT :scan
"""
_MESSAGE_COLUMNS = "id, sender, recipient, body, sent_at_ms, read"
_MESSAGES_AFTER = f"""
    SELECT {_MESSAGE_COLUMNS} FROM messages
    WHERE recipient = ? AND id > ? ORDER BY id LIMIT ?
"""
_MESSAGE_TO = f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ? AND recipient = ?"
_RECEIVED_FROM = f"""
    SELECT {_MESSAGE_COLUMNS} FROM messages
    WHERE recipient = ? AND sender = ? AND id < ? ORDER BY id DESC LIMIT ?
"""
_SENT_TO = f"""
    SELECT {_MESSAGE_COLUMNS} FROM messages
    WHERE sender_id = ? AND recipient = ? AND id < ? ORDER BY id DESC LIMIT ?
"""
_SESSIONS_OF = """
    SELECT token_hash, created_ms, used_ms, client_label FROM sessions
    WHERE account_id = ? AND expires_ms > ? ORDER BY created_ms DESC, rowid DESC LIMIT ?
"""
"""Newest first; logins in one millisecond by insertion (their index's order), which is
a display order only: the replies of ops never depend on it."""
_SESSION_WITH_ID = """
    SELECT token_hash FROM sessions
    WHERE token_hash >= ? AND token_hash < ? AND +account_id = ? AND expires_ms > ?
    LIMIT 1
"""
"""A range of the primary key (``+`` keeps SQLite off the account's index): the id's
prefix matches one session in practice, and the leader resolves it to a full hash."""
_UNREAD_COUNT = "SELECT count(*) FROM messages WHERE recipient = ? AND read = 0"
_LAST_MESSAGE_ID = "SELECT max(id) FROM messages WHERE recipient = ?"


class _Queries:
    """The read queries, over whichever connection the subclass opened."""

    _db: sqlite3.Connection

    @property
    def connection(self) -> sqlite3.Connection:
        """The SQLite connection the queries run on, for inspecting how they run (PRAGMAs,
        query plans, a trace of the statements). A write through it bypasses apply()
        and the log, so replicas would disagree: every change is an op."""
        return self._db

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def copy_to(self, path: str | os.PathLike[str]) -> int:
        """Write a consistent copy of the state (a snapshot) to path; return its applied index.

        One backup step copies every page inside one read transaction, so the copy is
        the state as of one commit. Over a reader (ChatReader) it runs beside the
        writer: in WAL mode applies go on meanwhile, unseen by the copy."""
        with closing(sqlite3.connect(path)) as target:
            self._db.backup(target)
            target.execute("PRAGMA journal_mode=DELETE")
            return target.execute(_APPLIED_INDEX).fetchone()[0]

    def session(self, token_hash: str) -> Session | None:
        row = self._db.execute(_SESSION, (token_hash,)).fetchone()
        return Session(*row) if row else None

    def account(self, username: str) -> Account | None:
        row = self._db.execute(_ACCOUNT, (username,)).fetchone()
        return Account(*row) if row else None

    def stored_result(self, username: str, request_id: str, kind: str) -> Result | None:
        """The reply stored for this user's request of this kind, whatever its age:
        apply() decides expiry by the retry's own now_ms, and pruning only lags it."""
        row = self._db.execute(_STORED_RESULT, (username, request_id, kind)).fetchone()
        return self._replied(row[0], row[1], kind) if row else None

    def session_result(self, token_hash: str, request_id: str, kind: str) -> Result | None:
        """The reply stored for a request of this kind made on this session: how a retry
        finds it once the first attempt ended the session (Logout, DeleteAccount)."""
        query = _SESSION_RESULT.format(and_newer="")
        row = self._db.execute(query, (token_hash, request_id, kind)).fetchone()
        return self._replied(row[0], row[1], kind) if row else None

    def _replied(self, username: str, stored: str, kind: str) -> Result:
        """A stored reply, as stored: O(1) however large the first reply was, since every
        replica answers a retry this way as it applies it. A ReadMessages batch is its
        message ids and the reader's name; the leader reads those messages again
        (:meth:`messages_by_id`) off the state machine's path."""
        result = Result.from_json(stored, kind)
        if isinstance(result.value, ReadIds):
            return Result(value=ReadAgain(username, result.value))
        return result

    def messages_by_id(self, username: str, ids: Sequence[int]) -> list[StoredMessage]:
        """The messages among ids (in that order) still addressed to username, marked read:
        a retried ReadMessages batch as first returned, less any message deleted since."""
        rows = (self._db.execute(_MESSAGE_TO, (id_, username)).fetchone() for id_ in ids)
        return [replace(_message(row), read=True) for row in rows if row]

    def list_accounts(
        self, pattern: str, after: str, limit: int, scan: int = LIST_SCAN_ROWS
    ) -> NamePage:
        """Up to ``limit`` (at least 1) usernames above ``after`` matching the shell
        wildcard ``pattern`` (empty: all), examining at most ``scan`` names.

        The pattern's literal prefix narrows the index range; within it a pattern
        may match few names (``*z*``), so the scan stops after ``scan`` names
        however few matched, and the page says where to resume: a page costs the
        same whatever the pattern, and page tokens continue the scan.
        """
        pattern = pattern or "*"
        prefix = _literal_prefix(pattern)
        params = {
            "low": prefix,
            "high": _above_prefix(prefix),
            "after": after,
            "pattern": pattern,
            "scan": scan,
        }
        names: list[str] = []
        examined = 0
        last = ""
        for last, matches in self._db.execute(_SCAN_ACCOUNTS, params):
            examined += 1
            if matches:
                names.append(last)
                if len(names) > limit:  # one more than the page: there are more
                    return NamePage(names[:limit], names[limit - 1])
        return NamePage(names, last if examined == params["scan"] else "")

    def messages_after(self, username: str, after_id: int, limit: int) -> list[StoredMessage]:
        if limit <= 0:
            return []
        rows = self._db.execute(_MESSAGES_AFTER, (username, after_id, limit))
        return [_message(row) for row in rows]

    def history(
        self,
        account_id: int,
        username: str,
        partner: str,
        before_id: int,
        limit: int,
        max_bytes: int,
    ) -> HistoryPage:
        """Up to ``limit`` messages between username and partner with id < before_id, newest
        first, stopping before max_bytes of bodies unless that would return nothing.

        Two index range scans (received by sender name, sent by account id, so a
        re-registered name never sees what its former owner sent), each at most
        limit + 1 rows, merged: a page costs the same however long the conversation."""
        before = before_id or 2**63 - 1
        received = self._db.execute(_RECEIVED_FROM, (username, partner, before, limit + 1))
        sent = self._db.execute(_SENT_TO, (account_id, partner, before, limit + 1))
        merged = {row[0]: _message(row) for row in (*received, *sent)}  # to oneself: both
        candidates = sorted(merged.values(), key=lambda message: message.id, reverse=True)
        taken: list[StoredMessage] = []
        total_bytes = 0
        for message in candidates[:limit]:
            total_bytes += len(message.body.encode())
            if taken and total_bytes > max_bytes:
                break
            taken.append(message)
        more = len(candidates) > len(taken)
        return HistoryPage(taken, taken[-1].id if more else 0)

    def sessions_of(self, account_id: int, now_ms: int) -> list[SessionListing]:
        """The account's unexpired sessions, newest first, at most SESSIONS_LIST_MAX."""
        rows = self._db.execute(_SESSIONS_OF, (account_id, now_ms, SESSIONS_LIST_MAX))
        return [SessionListing(*row) for row in rows]

    def session_with_id(self, account_id: int, session_id: str, now_ms: int) -> str:
        """The token hash of the account's unexpired session with this id, or ''."""
        params = (session_id, session_id + "g", account_id, now_ms)  # 'g': above every hex digit
        row = self._db.execute(_SESSION_WITH_ID, params).fetchone()
        return row[0] if row else ""

    def unread_count(self, username: str) -> int:
        return self._db.execute(_UNREAD_COUNT, (username,)).fetchone()[0]

    def last_message_id(self, username: str) -> int:
        """The newest message addressed to username (0 if none): Subscribe after it is live-only."""
        return self._db.execute(_LAST_MESSAGE_ID, (username,)).fetchone()[0] or 0


def _message(row: tuple[Any, ...]) -> StoredMessage:
    id_, sender, recipient, body, sent_at_ms, read = row
    return StoredMessage(id_, sender, recipient, body, sent_at_ms, bool(read))


def _literal_prefix(pattern: str) -> str:
    """The part of a GLOB pattern before its first wildcard (GLOB has no escapes)."""
    return re.split(r"[*?\[]", pattern, maxsplit=1)[0]


def _above_prefix(prefix: str) -> str | bytes:
    """The least text above every string that starts with ``prefix``.

    SQLite compares text as UTF-8 bytes, which is code point order: bump the
    last code point, skipping the surrogates, which UTF-8 cannot hold.
    """
    while prefix:
        last = ord(prefix[-1])
        if last < sys.maxunicode:
            return prefix[:-1] + chr(0xE000 if last + 1 == 0xD800 else last + 1)
        prefix = prefix[:-1]
    return _ABOVE_ALL_TEXT


class ChatReader(_Queries):
    """A read-only connection, for read queries from another thread while ChatState writes.

    WAL lets readers run beside the writer. Open it once ChatState has created the
    database. Use it from one thread at a time (any thread: pools hand it around).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)


# -- the writer -----------------------------------------------------------------

_APPLIED_INDEX = "SELECT value FROM meta WHERE key = 'applied_index'"
_SET_APPLIED_INDEX = "UPDATE meta SET value = ? WHERE key = 'applied_index'"
_CLOCK = "SELECT value FROM meta WHERE key = 'clock_ms'"
_SET_CLOCK = "UPDATE meta SET value = ? WHERE key = 'clock_ms'"
_INSERT_ACCOUNT = (
    "INSERT INTO accounts (id, username, password_hash, created_ms) VALUES (?, ?, ?, ?)"
)
_INSERT_SESSION = """
    INSERT OR IGNORE INTO sessions
        (token_hash, account_id, created_ms, expires_ms, used_ms, client_label)
    VALUES (?, ?, ?, ?, ?, ?)
"""
_DELETE_SESSION = "DELETE FROM sessions WHERE token_hash = ?"
_USE_SESSION = """
    UPDATE sessions SET expires_ms = max(expires_ms, ?), used_ms = max(used_ms, ?)
    WHERE token_hash = ?
"""
_PRUNE_SESSIONS = """
    DELETE FROM sessions WHERE rowid IN (
        SELECT rowid FROM sessions WHERE expires_ms <= ? ORDER BY expires_ms, rowid LIMIT ?
    )
"""
_SET_PASSWORD_HASH = "UPDATE accounts SET password_hash = ? WHERE id = ?"
_INSERT_MESSAGE = """
    INSERT INTO messages (id, sender_id, sender, recipient, body, sent_at_ms, read)
    VALUES (?, ?, ?, ?, ?, ?, 0)
"""
_OLDEST_UNREAD = f"""
    SELECT {_MESSAGE_COLUMNS} FROM messages
    WHERE recipient = ? AND read = 0 ORDER BY id LIMIT ?
"""
_SET_READ = "UPDATE messages SET read = 1 WHERE id = ?"
_MARK_READ = "UPDATE messages SET read = 1 WHERE id = ? AND recipient = ? AND read = 0"
_DELETE_MESSAGE = "DELETE FROM messages WHERE id = ? AND (sender_id = ? OR recipient = ?)"
_DELETE_MESSAGES_TO = "DELETE FROM messages WHERE recipient = ?"
_DELETE_SESSIONS_OF = "DELETE FROM sessions WHERE account_id = ?"
_DELETE_ACCOUNT = "DELETE FROM accounts WHERE id = ?"
_RETIRE_RESULTS = "UPDATE request_results SET username = ? WHERE username = ?"
_UNEXPIRED_RESULT = _STORED_RESULT + " AND created_ms > ?"
_UNEXPIRED_SESSION_RESULT = _SESSION_RESULT.format(and_newer=" AND created_ms > ?")
_STORE_RESULT = """
    INSERT INTO request_results (username, request_id, kind, token_hash, created_ms, result)
    VALUES (?, ?, ?, ?, ?, ?)
    ON CONFLICT (username, request_id, kind) DO UPDATE SET
        token_hash = excluded.token_hash, created_ms = excluded.created_ms, result = excluded.result
"""
_PRUNE_RESULTS = """
    DELETE FROM request_results WHERE rowid IN (
        SELECT rowid FROM request_results WHERE created_ms <= ?
        ORDER BY created_ms, rowid LIMIT ?
    )
"""


_HOT_OPS = (SendMessage, Touch)
"""The ops nearly every entry is, and that read and write little: see _Batch."""


@dataclass(slots=True)
class _Batch:
    """One apply() transaction's reads remembered and writes held back.

    A hot op (_HOT_OPS) reads its session, its recipient and maybe a stored reply,
    and writes a message, a renewal and a reply. Held here, each table is written
    once per run of hot ops (executemany), and each session and recipient is read
    once. Every other op settles before and after it runs (writes what is held,
    forgets what was read), so it finds and leaves the database exactly as applying
    one op at a time would; a hot op whose session is gone settles too.
    """

    sessions: dict[str, Session | None] = field(default_factory=dict)
    accounts: dict[str, Account | None] = field(default_factory=dict)
    messages: list[tuple[int, int, str, str, str, int]] = field(default_factory=list)
    uses: dict[str, tuple[int, int]] = field(default_factory=dict)
    """token hash: (deadline, last used), both only ever moved later"""
    replies: dict[tuple[str, str, str], tuple[str, int, str]] = field(default_factory=dict)
    """(username, request_id, kind): (token_hash, created_ms, stored reply)"""
    stored: int = 0  # replies stored in the whole batch
    cutoff: int = 0  # the expiry cutoff of the last of them

    def settle(self) -> None:
        for held in (self.sessions, self.accounts, self.messages, self.uses, self.replies):
            held.clear()


class ChatState(_Queries):
    """The writer. Used from one thread at a time (the shell runs it in a worker thread),
    though not necessarily always the same thread."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        _create_schema(self._db)
        self._applied_index: int = self._db.execute(_APPLIED_INDEX).fetchone()[0]
        self._clock_ms: int = self._db.execute(_CLOCK).fetchone()[0]
        self._batch = _Batch()

    @property
    def applied_index(self) -> int:
        """The last log index applied; committed in the same transaction as its effects."""
        return self._applied_index

    @property
    def clock_ms(self) -> int:
        """The cluster time of the newest op applied: every op is judged at the later of
        its own time and this one, so time in the state never goes backwards."""
        return self._clock_ms

    def checkpoint(self) -> int | None:
        """Copy the WAL into the database file and fsync it; return the applied index that
        is now durable, or None if readers kept part of the WAL from being copied.

        Automatic checkpoints are off (they would fsync inside an apply on the event
        loop); the shell calls this from its worker thread instead, and may drop log
        entries up to the index it returns.
        """
        busy, wal_pages, copied = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return self._applied_index if not busy and wal_pages == copied else None

    def restore_from(self, path: str | os.PathLike[str]) -> int:
        """Replace the whole state by the snapshot at path, in one transaction, durably.

        SQLite's backup API writes the destination in a single transaction, so a
        crash leaves either the old state or the new one, and open read
        connections simply see the new content from their next query on. The
        state normally runs with ``synchronous=NORMAL`` (the log can replay what a
        power loss takes), but a restore replaces what the log was compacted to:
        once the caller clears its pending mark there is nothing to replay from.
        So the restore is fsynced (``synchronous=FULL`` for it, then a full
        checkpoint) before this returns.
        """
        self._db.execute("PRAGMA synchronous = FULL")
        try:
            with closing(sqlite3.connect(path)) as source:
                source.backup(self._db)
            _create_schema(self._db)  # WAL again, and a snapshot from an older release migrated
            self._db.execute("PRAGMA wal_checkpoint(FULL)")
        finally:
            self._db.execute("PRAGMA synchronous = NORMAL")
        self._applied_index = self._db.execute(_APPLIED_INDEX).fetchone()[0]
        self._clock_ms = self._db.execute(_CLOCK).fetchone()[0]
        return self._applied_index

    def apply(self, entries: Sequence[tuple[int, Op | None]]) -> list[Result]:
        """Apply a batch of committed entries in one transaction; one Result per entry.

        ``(index, None)`` is a noop or config entry. Entries at or below
        applied_index were applied before a crash and are skipped, so the shell
        may replay the log from any point at or before applied_index.
        """
        results: list[Result] = []
        applied, clock = self._applied_index, self._clock_ms
        self._batch = _Batch()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            with self._db:  # commits, or rolls the whole batch back on any exception
                for index, op in entries:
                    if index <= applied:
                        results.append(Result())
                        continue
                    results.append(Result() if op is None else self._apply_op(index, op))
                    applied = index
                self._settle()
                self._prune_results()
                self._db.execute(_SET_APPLIED_INDEX, (applied,))
                self._db.execute(_SET_CLOCK, (self._clock_ms,))
        except BaseException:
            self._clock_ms = clock
            raise
        self._applied_index = applied
        return results

    def _apply_op(self, index: int, op: Op) -> Result:
        problem = _malformed(op)
        if problem:
            return error("INVALID_ARGUMENT", problem)
        if op.now_ms:  # 0: an entry from before its kind carried a time, judged as it was
            if op.now_ms < self._clock_ms:
                op = replace(op, now_ms=self._clock_ms)
            self._clock_ms = op.now_ms
        if isinstance(op, _HOT_OPS):
            return self._on_session(index, op)
        self._settle()
        try:
            match op:
                case CreateAccount():
                    return self._reply_once(
                        op.username, "", op, lambda: self._create_account(index, op)
                    )
                case Login():
                    return self._reply_once(op.username, "", op, lambda: self._login(op))
                case _:
                    return self._on_session(index, op)
        finally:
            self._settle()

    def _on_session(self, index: int, op: _SessionOp) -> Result:
        """An op on a session: UNAUTHENTICATED unless the session is live by the op's
        clock (or the op retries a request that ended it); a use renews it."""
        session = self._session_of(op.token_hash)
        if session is None or session.expired(op.now_ms):
            self._settle()  # the stored replies it may retry are all in the database
            return self._after_session(op)
        match op:
            case Logout():
                return self._reply_once(
                    session.username, op.token_hash, op, lambda: self._logout(op)
                )
            case DeleteAccount():
                return self._reply_once(
                    _former(session), op.token_hash, op, lambda: self._delete_account(session, op)
                )
        if op.session_deadline_ms > session.expires_ms:  # a renewal only moves it later
            session = replace(session, expires_ms=op.session_deadline_ms)
            self._batch.sessions[op.token_hash] = session
        if op.now_ms:  # 0: an entry from before times, which recorded no use
            self._batch.uses[op.token_hash] = (session.expires_ms, op.now_ms)
        if isinstance(op, Touch):
            return Result()
        return self._reply_once(
            session.username, op.token_hash, op, lambda: self._authenticated(index, session, op)
        )

    def _authenticated(
        self,
        index: int,
        session: Session,
        op: SendMessage | ReadMessages | MarkRead | DeleteMessages | EndSession,
    ) -> Result:
        match op:
            case EndSession():
                return self._end_session(session, op)
            case SendMessage():
                return self._send_message(index, session, op)
            case ReadMessages():
                return self._read_messages(session, op)
            case MarkRead():
                return self._mark_read(session, op)
            case DeleteMessages():
                return self._delete_messages(session, op)
            case _:
                assert_never(op)

    # -- exactly once ------------------------------------------------------------

    def _reply_once(
        self, username: str, token_hash: str, op: RequestOp, run: Callable[[], Result]
    ) -> Result:
        """Answer a retry with the stored first reply; otherwise run and store the reply.

        Expiry is judged by the op's own now_ms, so it does not depend on how far
        pruning has got; pruning just keeps the table to about a day of requests.
        """
        if not op.request_id:
            return run()
        cutoff = op.now_ms - RESULT_TTL_MS
        key = (username, op.request_id, op.kind)
        held = self._batch.replies.get(key)
        if held is None:
            row = self._db.execute(_UNEXPIRED_RESULT, (*key, cutoff)).fetchone()
            if row:
                return self._replied(row[0], row[1], op.kind)
        elif held[1] > cutoff:  # held back in this batch, newer than any stored row
            return self._replied(username, held[2], op.kind)
        result = run()
        self._batch.replies[key] = (token_hash, op.now_ms, _storable(result))
        self._batch.stored += 1
        self._batch.cutoff = cutoff
        return result

    def _prune_results(self) -> None:
        """Each reply the batch stored removes up to PRUNE_CHUNK expired ones, at the
        batch's end. Which expired rows are left may then differ between replicas that
        batch differently, but no reply depends on them: expiry is judged by each op's
        own time, which never goes backwards, so a row expired once stays expired."""
        if self._batch.stored:
            self._db.execute(_PRUNE_RESULTS, (self._batch.cutoff, PRUNE_CHUNK * self._batch.stored))

    # -- a batch's reads remembered and writes held back ---------------------------------

    def _session_of(self, token_hash: str) -> Session | None:
        sessions = self._batch.sessions
        if token_hash not in sessions:
            sessions[token_hash] = self.session(token_hash)
        return sessions[token_hash]

    def _account_named(self, username: str) -> Account | None:
        accounts = self._batch.accounts
        if username not in accounts:
            accounts[username] = self.account(username)
        return accounts[username]

    def _settle(self) -> None:
        """Write what the batch held back and forget what it read: from here on the
        database is what applying one op at a time would have made it."""
        batch = self._batch
        if batch.messages:
            self._db.executemany(_INSERT_MESSAGE, batch.messages)
        if batch.uses:
            uses = ((*use, token) for token, use in batch.uses.items())
            self._db.executemany(_USE_SESSION, uses)
        if batch.replies:
            replies = ((*key, *held) for key, held in batch.replies.items())
            self._db.executemany(_STORE_RESULT, replies)
        batch.settle()

    def _after_session(self, op: _SessionOp) -> Result:
        """An op whose session is gone or expired: the stored reply if it retries a request
        made on that session (whose first attempt may have ended it), else UNAUTHENTICATED."""
        if not isinstance(op, Touch) and op.request_id:
            cutoff = op.now_ms - RESULT_TTL_MS
            key = (op.token_hash, op.request_id, op.kind, cutoff)
            row = self._db.execute(_UNEXPIRED_SESSION_RESULT, key).fetchone()
            if row:
                return self._replied(row[0], row[1], op.kind)
        return error("UNAUTHENTICATED", NO_SESSION)

    # -- one method per op ----------------------------------------------------------

    def _create_account(self, index: int, op: CreateAccount) -> Result:
        if self.account(op.username) is not None:
            return error("ALREADY_EXISTS", f"username {op.username!r} is taken")
        self._db.execute(_INSERT_ACCOUNT, (index, op.username, op.password_hash, op.now_ms))
        return Result()

    def _login(self, op: Login) -> Result:
        """The leader checked the password against account_id; it must still be this name's.

        The reply names the hash whose key sealed the token (``seal_hash``): a retry
        unseals with that one even after the account's hash changed. A hash that
        differs from the account's is the leader's upgrade of it and replaces it.
        """
        self._db.execute(_PRUNE_SESSIONS, (op.now_ms, PRUNE_CHUNK))
        account = self.account(op.username)
        if account is None or account.id != op.account_id:
            return error("UNAUTHENTICATED", WRONG_CREDENTIALS)
        deadline = op.session_deadline_ms or op.now_ms + LEGACY_SESSION_TTL_MS
        inserted = self._db.execute(
            _INSERT_SESSION,
            (op.token_hash, account.id, op.now_ms, deadline, op.now_ms, op.client_label),
        )
        if inserted.rowcount == 0:
            return error("INVALID_ARGUMENT", "session token hash is already in use")
        if op.password_hash and op.password_hash != account.password_hash:
            self._db.execute(_SET_PASSWORD_HASH, (op.password_hash, account.id))
        return Result(
            value=LoggedIn(
                sealed_token=op.sealed_token,
                seal_hash=op.password_hash,
                unread_count=self.unread_count(op.username),
                last_message_id=self.last_message_id(op.username),
            )
        )

    def _logout(self, op: Logout) -> Result:
        self._db.execute(_DELETE_SESSION, (op.token_hash,))
        return Result()

    def _end_session(self, session: Session, op: EndSession) -> Result:
        """Only a live session of the caller's own account ends: any other is NOT_FOUND,
        so the answer tells nothing of other users' sessions."""
        ended = self._session_of(op.ended_token_hash) if op.ended_token_hash else None
        if ended is None or ended.account_id != session.account_id or ended.expired(op.now_ms):
            return error("NOT_FOUND", NO_SUCH_SESSION)
        self._db.execute(_DELETE_SESSION, (op.ended_token_hash,))
        return Result()

    def _send_message(self, index: int, session: Session, op: SendMessage) -> Result:
        recipient = self._account_named(op.recipient)
        if recipient is None:
            return error("NOT_FOUND", f"no user named {op.recipient!r}")
        self._batch.messages.append(
            (index, session.account_id, session.username, op.recipient, op.body, op.now_ms)
        )
        return Result(
            value=Sent(index, op.recipient_online, session.username, recipient.id, op.now_ms)
        )

    def _read_messages(self, session: Session, op: ReadMessages) -> Result:
        """The oldest unread, up to limit, stopping before max_bytes of bodies unless
        that would return nothing: the reply must fit in one gRPC message."""
        taken: list[StoredMessage] = []
        total_bytes = 0
        with closing(self._db.execute(_OLDEST_UNREAD, (session.username, op.limit))) as rows:
            for row in rows:
                message = _message(row)
                size = len(message.body.encode())
                if taken and total_bytes + size > op.max_bytes:
                    break
                taken.append(message)
                total_bytes += size
        self._db.executemany(_SET_READ, ((message.id,) for message in taken))
        batch = tuple(replace(message, read=True) for message in taken)
        return Result(value=MessagesRead(batch, self.unread_count(session.username)))

    def _mark_read(self, session: Session, op: MarkRead) -> Result:
        marked = self._db.executemany(
            _MARK_READ, ((message_id, session.username) for message_id in op.message_ids)
        )
        return Result(value=Marked(marked.rowcount))

    def _delete_messages(self, session: Session, op: DeleteMessages) -> Result:
        """Sender rights go by account id: a re-registered name must not delete the
        messages its previous owner sent."""
        deleted = self._db.executemany(
            _DELETE_MESSAGE,
            ((message_id, session.account_id, session.username) for message_id in op.message_ids),
        )
        return Result(value=MessagesDeleted(deleted.rowcount))

    def _delete_account(self, session: Session, op: DeleteAccount) -> Result:
        if session.account_id != op.account_id:
            return error("UNAUTHENTICATED", ACCOUNT_CHANGED)
        self._db.execute(_DELETE_MESSAGES_TO, (session.username,))
        self._db.execute(_DELETE_SESSIONS_OF, (session.account_id,))
        self._db.execute(_DELETE_ACCOUNT, (session.account_id,))
        self._db.execute(_RETIRE_RESULTS, (_former(session), session.username))
        return Result(value=AccountDeleted(session.username, session.account_id))


def _former(session: Session) -> str:
    """The name a deleted account's stored replies are kept under: its retries still find
    them by token hash (``_after_session``), and whoever registers the name next starts
    with none of them, whatever request ids they choose. ``#`` is in no username, and
    the account id tells two former owners of one name apart. DeleteAccount's own
    replies are kept there from the first, so a retry finds them after it succeeded."""
    return f"{session.username}#{session.account_id}"


def _storable(result: Result) -> str:
    """A reply as stored. A ReadMessages batch keeps only its message ids (a retry reads
    them again, see _Queries._replied): a stored reply holds no copy of message text
    that DeleteMessages or DeleteAccount could not remove, and stays small."""
    if isinstance(result.value, MessagesRead):
        result = Result(value=result.value.by_id())
    return result.to_json()


# -- validation of decodable ops ------------------------------------------------


def _is_text(value: object) -> bool:
    """JSON can carry lone surrogates, which SQLite refuses to store."""
    if type(value) is not str:
        return False
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _is_int64(value: object) -> bool:
    return type(value) is int and value in _INT64


def _is_bool(value: object) -> bool:
    return type(value) is bool


def _is_ids(value: object) -> bool:
    return type(value) is tuple and all(_is_int64(item) for item in value)


_TYPE_CHECKS: dict[object, Callable[[object], bool]] = {
    str: _is_text,
    int: _is_int64,
    bool: _is_bool,
    tuple[int, ...]: _is_ids,
}


def _field_checks(cls: type) -> tuple[tuple[str, Callable[[object], bool]], ...]:
    """Fails at import if ops.py grows a field type this module cannot check."""
    hints = get_type_hints(cls)
    return tuple((f.name, _TYPE_CHECKS[hints[f.name]]) for f in fields(cls))


_FIELD_CHECKS = {cls: _field_checks(cls) for cls in OP_TYPES.values()}


def _malformed(op: Op) -> str | None:
    """Why op cannot be applied, or None. Decoding does not check field types."""
    checks = _FIELD_CHECKS.get(type(op))
    if checks is None:
        raise TypeError(f"not a chat op: {op!r}")
    for name, check in checks:
        if not check(getattr(op, name)):
            return f"malformed {op.kind} op: bad {name!r} field"
    if isinstance(op, ReadMessages) and op.limit < 1:
        return "malformed read_messages op: limit must be at least 1"
    if getattr(op, "now_ms", 0) < 0:
        return f"malformed {op.kind} op: now_ms is negative"
    return None


# -- schema -----------------------------------------------------------------------


def _create_schema(conn: sqlite3.Connection) -> None:
    """Create what is missing. WAL with synchronous=NORMAL: the op log is the durable
    truth, and applied_index commits atomically with the effects, so a crash loses
    at most a suffix the shell re-applies."""
    db = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
    db.enable_wal()
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    with db.atomic():
        _create_tables(db)
        _create_indexes(db)
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('applied_index', 0)")
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('clock_ms', 0)")


_KIND_UNKINDED_RESULTS = f"""
    INSERT INTO request_results (username, request_id, kind, token_hash, created_ms, result)
    SELECT username, request_id, kinds.kind, '', created_ms, result
    FROM request_results_unkinded, (
        SELECT '{CreateAccount.kind}' AS kind
        UNION ALL SELECT '{Login.kind}' UNION ALL SELECT '{SendMessage.kind}'
    ) AS kinds
    WHERE json_extract(result, '$.code') != '' OR kinds.kind = CASE
        WHEN json_type(result, '$.value.sealed_token') IS NOT NULL THEN '{Login.kind}'
        WHEN json_type(result, '$.value.message_id') IS NOT NULL THEN '{SendMessage.kind}'
        ELSE '{CreateAccount.kind}' END
"""
"""Replies stored before they were keyed by kind came from CreateAccount, Login and
SendMessage, and one reply answered a retry of any kind. A success names its kind by
its fields (Login's sealed token, SendMessage's message id, CreateAccount's nothing);
an error does not, so it is kept under all three kinds and answers a retry of any of
them, as it did before."""


def _create_tables(db: sqlite_utils.Database) -> None:
    def table(name: str, columns: dict[str, type], pk: str | tuple[str, ...]) -> None:
        db.table(name).create(
            columns, pk=pk, not_null=set(columns), if_not_exists=True, strict=True
        )

    table("meta", {"key": str, "value": int}, pk="key")
    table(
        "accounts",
        {"id": int, "username": str, "password_hash": str, "created_ms": int},
        pk="id",
    )
    table(
        "sessions",
        {
            "token_hash": str,
            "account_id": int,
            "created_ms": int,
            "expires_ms": int,
            "used_ms": int,
            "client_label": str,
        },
        pk="token_hash",
    )
    if "expires_ms" not in db.table("sessions").columns_dict:  # a database from before expiry
        db.execute("ALTER TABLE sessions ADD COLUMN expires_ms INTEGER NOT NULL DEFAULT 0")
        db.execute("UPDATE sessions SET expires_ms = created_ms + ?", [LEGACY_SESSION_TTL_MS])
    if "used_ms" not in db.table("sessions").columns_dict:  # from before ListSessions
        db.execute("ALTER TABLE sessions ADD COLUMN used_ms INTEGER NOT NULL DEFAULT 0")
        db.execute("ALTER TABLE sessions ADD COLUMN client_label TEXT NOT NULL DEFAULT ''")
        db.execute("UPDATE sessions SET used_ms = created_ms")
    table(
        "messages",
        {
            "id": int,
            "sender_id": int,  # the sending account: sender names can be re-registered
            "sender": str,
            "recipient": str,
            "body": str,
            "sent_at_ms": int,
            "read": int,
        },
        pk="id",
    )
    results = db.table("request_results")
    unkinded = results.exists() and "kind" not in results.columns_dict
    if unkinded:  # a database from before replies were keyed by kind
        db.execute("ALTER TABLE request_results RENAME TO request_results_unkinded")
    table(
        "request_results",
        {
            "username": str,
            "request_id": str,
            "kind": str,  # the op kind: one id names one request per kind of call
            "token_hash": str,  # the session it came on; '' for CreateAccount and Login
            "created_ms": int,
            "result": str,
        },
        pk=("username", "request_id", "kind"),
    )
    if unkinded:
        db.execute(_KIND_UNKINDED_RESULTS)
        db.execute("DROP TABLE request_results_unkinded")


def _create_indexes(db: sqlite_utils.Database) -> None:
    indexes: Iterable[tuple[str, list[str], str, bool]] = (
        ("accounts", ["username"], "accounts_by_username", True),
        ("sessions", ["account_id"], "sessions_by_account", False),
        ("sessions", ["account_id", "created_ms"], "sessions_by_account_age", False),
        ("sessions", ["expires_ms"], "sessions_by_expiry", False),
        ("messages", ["recipient", "id"], "messages_by_recipient", False),
        ("messages", ["recipient", "sender", "id"], "messages_received_from", False),
        ("messages", ["sender_id", "recipient", "id"], "messages_sent_to", False),
        ("request_results", ["created_ms"], "request_results_by_age", False),
        (
            "request_results",
            ["token_hash", "request_id", "kind", "created_ms", "username"],
            "request_results_by_session",
            False,
        ),
    )
    for table, columns, name, unique in indexes:
        db.table(table).create_index(columns, index_name=name, unique=unique, if_not_exists=True)
    # sqlite-utils cannot declare a partial index. Only unread rows are in it, so
    # ReadMessages touches the unread messages alone; `read` is constant in it, but
    # listing it lets SQLite count a user's unread from the index without the rows.
    db.execute(
        "CREATE INDEX IF NOT EXISTS messages_unread_by_recipient"
        " ON messages (recipient, read, id) WHERE read = 0"
    )
