"""ChatState against a small in-memory model of the chat rules.

The model is the rules of the brief written as plainly as possible: dicts and
loops, no indexes, no SQL. Hypothesis drives both with the same log (batches
with gaps, noops, replays of applied entries, malformed ops, clock jumps past
the request-id expiry and session deadlines, session renewals, password-hash
upgrades, reopening the database) and compares every Result and every query
answer after every step.

Every mutating op may carry a request_id; replies are kept per (user,
request_id, kind) with the session they came on, so retries of each kind, the
same id on two kinds, and retries after the session ended all come up.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from fnmatch import fnmatchcase
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

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
    Touch,
)
from chatnode.state import (
    LEGACY_SESSION_TTL_MS,
    RESULT_TTL_MS,
    Account,
    ChatReader,
    ChatState,
    NamePage,
    Session,
    StoredMessage,
)

NAMES = ["al", "alice", "Bob", "bob"]
TOKENS = ["t0", "t1", "t2", "t3"]
REQUEST_IDS = ["", "", "r1", "r2"]
BODIES = ["", "a", "bb", "é", "ccc"]  # small, known sizes: byte limits are hit exactly
PATTERN_PARTS = ["a", "l", "b", "o", "B", "*", "?", "[ab]", "[a-c]", "[Bc]"]
# Mostly small steps, so retries hit their stored results; sometimes to or past expiry.
CLOCK_STEPS = [0, 0, 0, 0, 1, 60_000, RESULT_TTL_MS - 1, RESULT_TTL_MS]
# Session lifetimes a leader may give (0 on a Login: an entry from before deadlines).
LIFETIMES = [0, 1, 60_000, 60_001, RESULT_TTL_MS, 10 * RESULT_TTL_MS]
HASHES = ["", "h0", "h1", "h2"]
BAD_VALUES = [None, 1.5, "x", 7, True, [1], (1,), ("1",), 2**63, "\ud800"]


# -- the model --------------------------------------------------------------------


@dataclass
class ModelMessage:
    id: int
    sender_id: int
    sender: str
    recipient: str
    body: str
    sent_at_ms: int
    read: bool

    def stored(self) -> StoredMessage:
        return StoredMessage(
            self.id, self.sender, self.recipient, self.body, self.sent_at_ms, self.read
        )


FIELD_TYPES: dict[str, type] = {
    "username": str,
    "password_hash": str,
    "request_id": str,
    "now_ms": int,
    "account_id": int,
    "token_hash": str,
    "sealed_token": str,
    "recipient": str,
    "body": str,
    "recipient_online": bool,
    "limit": int,
    "max_bytes": int,
    "session_deadline_ms": int,
    "client_label": str,
    "ended_token_hash": str,
}


def well_formed(op: Op) -> bool:
    def fits(value: object, kind: type) -> bool:
        if kind is int:
            return type(value) is int and -(2**63) <= value < 2**63
        if kind is str:
            return type(value) is str and "\ud800" not in value
        return type(value) is kind

    for field in fields(op):
        value = getattr(op, field.name)
        if field.name == "message_ids":
            if type(value) is not tuple or not all(fits(v, int) for v in value):
                return False
        elif not fits(value, FIELD_TYPES[field.name]):
            return False
    if isinstance(op, ReadMessages) and op.limit < 1:
        return False
    return getattr(op, "now_ms", 0) >= 0


def failed(code: str) -> Result:
    return Result(code=code)


class Model:
    def __init__(self) -> None:
        self.applied = 0
        self.clock = 0  # the newest op time applied
        self.accounts: dict[str, tuple[int, str]] = {}  # name -> (id, password hash)
        self.sessions: dict[str, tuple[int, int]] = {}  # token hash -> (account id, deadline)
        self.messages: dict[int, ModelMessage] = {}
        # (user, request_id, kind) -> (created, session token hash, first reply)
        self.replies: dict[tuple[str, str, str], tuple[int, str, Result]] = {}

    def apply(self, index: int, op: Op | None) -> Result:
        if index <= self.applied:
            return Result()
        self.applied = index
        if op is None:
            return Result()
        if not well_formed(op):
            return failed("INVALID_ARGUMENT")
        if op.now_ms:  # judged at the later of its time and the newest applied
            op = replace(op, now_ms=max(op.now_ms, self.clock))
            self.clock = op.now_ms
        if isinstance(op, CreateAccount):
            return self.once(op.username, "", op, lambda: self.create(index, op))
        if isinstance(op, Login):
            return self.once(op.username, "", op, lambda: self.login(op))
        user = self.session_user(op.token_hash)
        if user is None or op.now_ms >= user[2]:
            return self.after_session(op)
        account_id, name, deadline = user
        token = op.token_hash
        if isinstance(op, Logout):
            return self.once(name, token, op, lambda: self.logout(token))
        if isinstance(op, DeleteAccount):  # its replies are kept under the former name
            return self.once(
                f"{name}#{account_id}",
                token,
                op,
                lambda: self.delete_account(account_id, name, op.account_id),
            )
        if op.session_deadline_ms:
            self.sessions[token] = (account_id, max(deadline, op.session_deadline_ms))
        if isinstance(op, Touch):
            return Result()
        if isinstance(op, SendMessage):
            return self.once(name, token, op, lambda: self.send(index, account_id, name, op))
        if isinstance(op, ReadMessages):
            return self.once(name, token, op, lambda: self.read(name, op.limit, op.max_bytes))
        if isinstance(op, MarkRead):
            return self.once(name, token, op, lambda: self.mark_read(name, op.message_ids))
        if isinstance(op, EndSession):
            return self.once(name, token, op, lambda: self.end_session(account_id, op))
        assert isinstance(op, DeleteMessages)
        return self.once(
            name, token, op, lambda: self.delete_messages(account_id, name, op.message_ids)
        )

    def once(self, name: str, token: str, op: RequestOp, run: Callable[[], Result]) -> Result:
        if not op.request_id:
            return run()
        stored = self.replies.get((name, op.request_id, op.kind))
        if stored is not None and stored[0] > op.now_ms - RESULT_TTL_MS:
            return self.replied(name, stored[2])
        result = run()
        self.replies[(name, op.request_id, op.kind)] = (op.now_ms, token, result)
        # Pruning removes every expired reply here: the model never holds more
        # than PRUNE_CHUNK of them, so the chunk limit never bites.
        self.replies = {k: v for k, v in self.replies.items() if v[0] > op.now_ms - RESULT_TTL_MS}
        return result

    def after_session(self, op: Op) -> Result:
        """A dead session: a retry of a request made on it gets its first reply."""
        if isinstance(op, Touch) or not op.request_id:
            return failed("UNAUTHENTICATED")
        stored = self.session_reply(op.token_hash, op.request_id, op.kind, op.now_ms)
        return stored if stored is not None else failed("UNAUTHENTICATED")

    def session_reply(self, token: str, rid: str, kind: str, now: int | None) -> Result | None:
        """The newest reply stored for (token, rid, kind), unexpired at now if given."""
        found = [
            (created, name, result)
            for (name, r, k), (created, t, result) in self.replies.items()
            if (t, r, k) == (token, rid, kind) and (now is None or created > now - RESULT_TTL_MS)
        ]
        if not found:
            return None
        _, name, result = max(found)
        return self.replied(name, result)

    def replied(self, name: str, stored: Result) -> Result:
        """A stored ReadMessages batch comes back as its message ids and the reader's name
        (the leader reads them again: see batch_read_again)."""
        if not isinstance(stored.value, MessagesRead):
            return stored
        ids = tuple(m.id for m in stored.value.messages)
        return Result(value=ReadAgain(name, ReadIds(ids, stored.value.remaining_unread)))

    def batch_read_again(self, name: str, ids: list[int]) -> list[StoredMessage]:
        """A retried batch as the leader reads it: without the messages deleted since."""
        kept = [self.messages[i] for i in ids if i in self.messages]
        return [replace(m.stored(), read=True) for m in kept if m.recipient == name]

    def end_session(self, account_id: int, op: EndSession) -> Result:
        ended = self.sessions.get(op.ended_token_hash)
        if ended is None or ended[0] != account_id or op.now_ms >= ended[1]:
            return failed("NOT_FOUND")
        del self.sessions[op.ended_token_hash]
        return Result()

    def conversation(self, account_id: int, name: str, partner: str) -> list[StoredMessage]:
        """Between name and partner, newest first: received by sender name, sent by
        account id."""
        between = [
            m
            for m in self.messages.values()
            if (m.recipient == name and m.sender == partner)
            or (m.sender_id == account_id and m.recipient == partner)
        ]
        return [m.stored() for m in sorted(between, key=lambda m: m.id, reverse=True)]

    def logout(self, token: str) -> Result:
        del self.sessions[token]
        return Result()

    def session_user(self, token: str) -> tuple[int, str, int] | None:
        """(account id, username, deadline) of a stored session, expired or not."""
        account_id, deadline = self.sessions.get(token, (None, 0))
        for name, (id_, _) in self.accounts.items():
            if id_ == account_id:
                return id_, name, deadline
        return None

    def create(self, index: int, op: CreateAccount) -> Result:
        if op.username in self.accounts:
            return failed("ALREADY_EXISTS")
        self.accounts[op.username] = (index, op.password_hash)
        return Result()

    def login(self, op: Login) -> Result:
        # Expired sessions go (all of them: the model never holds PRUNE_CHUNK).
        self.sessions = {t: s for t, s in self.sessions.items() if s[1] > op.now_ms}
        account = self.accounts.get(op.username)
        if account is None or account[0] != op.account_id:
            return failed("UNAUTHENTICATED")
        if op.token_hash in self.sessions:
            return failed("INVALID_ARGUMENT")
        deadline = op.session_deadline_ms or op.now_ms + LEGACY_SESSION_TTL_MS
        self.sessions[op.token_hash] = (account[0], deadline)
        if op.password_hash:
            self.accounts[op.username] = (account[0], op.password_hash)
        return Result(
            value=LoggedIn(
                sealed_token=op.sealed_token,
                seal_hash=op.password_hash,
                unread_count=len(self.inbox(op.username, unread_only=True)),
                last_message_id=max((m.id for m in self.inbox(op.username)), default=0),
            )
        )

    def send(self, index: int, account_id: int, name: str, op: SendMessage) -> Result:
        if op.recipient not in self.accounts:
            return failed("NOT_FOUND")
        self.messages[index] = ModelMessage(
            index, account_id, name, op.recipient, op.body, op.now_ms, False
        )
        return Result(
            value=Sent(
                message_id=index,
                recipient_online=op.recipient_online,
                sender=name,
                recipient_id=self.accounts[op.recipient][0],
                sent_at_ms=op.now_ms,
            )
        )

    def read(self, name: str, limit: int, max_bytes: int) -> Result:
        taken: list[ModelMessage] = []
        total = 0
        for message in self.inbox(name, unread_only=True)[:limit]:
            size = len(message.body.encode())
            if taken and total + size > max_bytes:
                break
            taken.append(message)
            total += size
        for message in taken:
            message.read = True
        return Result(
            value=MessagesRead(
                messages=tuple(m.stored() for m in taken),
                remaining_unread=len(self.inbox(name, unread_only=True)),
            )
        )

    def mark_read(self, name: str, ids: tuple[int, ...]) -> Result:
        marked = 0
        for id_ in ids:
            message = self.messages.get(id_)
            if message is not None and message.recipient == name and not message.read:
                message.read = True
                marked += 1
        return Result(value=Marked(marked_count=marked))

    def delete_messages(self, account_id: int, name: str, ids: tuple[int, ...]) -> Result:
        deleted = 0
        for id_ in ids:
            message = self.messages.get(id_)
            if message is not None and (
                message.sender_id == account_id or message.recipient == name
            ):
                del self.messages[id_]
                deleted += 1
        return Result(value=MessagesDeleted(deleted_count=deleted))

    def delete_account(self, account_id: int, name: str, checked_id: int) -> Result:
        if checked_id != account_id:
            return failed("UNAUTHENTICATED")
        del self.accounts[name]
        self.sessions = {t: s for t, s in self.sessions.items() if s[0] != account_id}
        self.messages = {i: m for i, m in self.messages.items() if m.recipient != name}
        self.replies = {  # the name's next owner starts with none of them
            (f"{name}#{account_id}" if n == name else n, r, k): v
            for (n, r, k), v in self.replies.items()
        }
        return Result(value=AccountDeleted(username=name, account_id=account_id))

    # -- queries -----------------------------------------------------------------------

    def inbox(self, name: str, unread_only: bool = False) -> list[ModelMessage]:
        return sorted(
            (
                m
                for m in self.messages.values()
                if m.recipient == name and not (unread_only and m.read)
            ),
            key=lambda m: m.id,
        )

    def list_accounts(self, pattern: str, after: str, limit: int, scan: int) -> NamePage:
        """The names after `after` that share the pattern's literal prefix, the first
        `scan` of them examined, the matches among them paged by limit."""
        pattern = pattern or "*"
        prefix = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
        in_range = sorted(n for n in self.accounts if n > after and n.startswith(prefix))
        examined = in_range[:scan]
        matches = [n for n in examined if fnmatchcase(n, pattern)]
        if len(matches) > limit:
            return NamePage(matches[:limit], matches[limit - 1])
        return NamePage(matches, examined[-1] if len(examined) == scan else "")


# -- the comparison -----------------------------------------------------------------


def same(actual: Result, expected: Result) -> bool:
    """Same code and value; an error must also explain itself in one line."""
    explained = bool(actual.message) and "\n" not in actual.message if actual.code else True
    return (actual.code, actual.value) == (expected.code, expected.value) and explained


class ChatStateMatchesModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.TemporaryDirectory()
        self.path = Path(self.directory.name) / "state.db"
        self.state = ChatState(self.path)
        self.reader = ChatReader(self.path)
        self.model = Model()
        self.next_index = 1
        self.clock = 1_000_000
        self.history: list[tuple[int, Op | None]] = []
        self.ids_seen: list[int] = [0]

    def teardown(self) -> None:
        self.reader.close()
        self.state.close()
        self.directory.cleanup()

    # -- op strategies (they depend on what the model holds) ---------------------------

    def names(self) -> st.SearchStrategy[str]:
        """Mostly a name that exists, so most ops get past the existence checks."""
        existing = sorted(self.model.accounts)
        return st.one_of(st.sampled_from(NAMES), *[st.sampled_from(existing)] * 3 * bool(existing))

    def tokens(self) -> st.SearchStrategy[str]:
        """Mostly a live session, so most ops get past authentication."""
        live = sorted(self.model.sessions)
        return st.one_of(st.sampled_from(TOKENS), *[st.sampled_from(live)] * 3 * bool(live))

    def account_ids(self, name: str) -> st.SearchStrategy[int]:
        """Mostly the name's current id; sometimes a stale or unrelated one."""
        current = self.model.accounts.get(name)
        known = st.sampled_from(self.ids_seen)
        return known if current is None else st.one_of(*[st.just(current[0])] * 3, known)

    def message_ids(self) -> st.SearchStrategy[tuple[int, ...]]:
        """Mostly ids of messages that exist (with repeats); sometimes any index at all."""
        existing = sorted(self.model.messages)
        any_index = st.integers(min_value=0, max_value=self.next_index + 1)
        ids = st.one_of(any_index, *[st.sampled_from(existing)] * 3 * bool(existing))
        return st.lists(ids, max_size=4).map(tuple)

    def now_ms(self) -> st.SearchStrategy[int]:
        """Mostly the clock; sometimes a leader whose clock is a little behind."""
        return st.sampled_from([0, 0, 0, 5_000]).map(lambda skew: max(self.clock - skew, 0))

    def valid_op(self, data: st.DataObject) -> Op:
        name = data.draw(self.names())
        token = data.draw(self.tokens())
        rid = data.draw(st.sampled_from(REQUEST_IDS))
        now = data.draw(self.now_ms())
        lifetime = data.draw(st.sampled_from(LIFETIMES))
        deadline = now + lifetime if lifetime else 0
        renewal = data.draw(st.sampled_from([0, 0, deadline]))
        kinds = ["create", "login", "logout", "send", "send", "send", "read", "read", "mark",
                 "delete", "delete_account", "touch", "end_session"]  # fmt: skip
        kind = data.draw(st.sampled_from(kinds))
        match kind:
            case "create":
                return CreateAccount(name, data.draw(st.sampled_from(["h1", "h2"])), rid, now)
            case "login":
                account_id = data.draw(self.account_ids(name))
                new_hash = data.draw(st.sampled_from(HASHES))
                sealed = f"sealed-{token}"
                return Login(name, account_id, token, sealed, rid, now, new_hash, deadline)
            case "logout":
                return Logout(token, now, rid)
            case "send":
                body = data.draw(st.one_of(st.sampled_from(BODIES), st.text(max_size=3)))
                online = data.draw(st.booleans())
                return SendMessage(token, name, body, rid, now, online, renewal)
            case "read":
                limit = data.draw(st.integers(min_value=0, max_value=4))
                max_bytes = data.draw(st.integers(min_value=-1, max_value=8))
                return ReadMessages(token, limit, max_bytes, now, renewal, rid)
            case "mark":
                return MarkRead(token, data.draw(self.message_ids()), now, renewal, rid)
            case "delete":
                return DeleteMessages(token, data.draw(self.message_ids()), now, renewal, rid)
            case "touch":
                return Touch(token, now, renewal)
            case "end_session":
                ended = data.draw(st.one_of(self.tokens(), st.just("")))
                return EndSession(token, ended, now, rid, renewal)
            case _:
                user = self.model.session_user(token)
                account_id = data.draw(self.account_ids(user[1] if user else name))
                return DeleteAccount(token, account_id, now, rid)

    def entry_op(self, data: st.DataObject) -> Op | None:
        choice = data.draw(st.sampled_from(["op"] * 8 + ["noop", "malformed"]))
        if choice == "noop":
            return None
        op = self.valid_op(data)
        if choice == "malformed":
            field = data.draw(st.sampled_from([f.name for f in fields(op)]))
            op = replace(op, **{field: data.draw(st.sampled_from(BAD_VALUES))})
        return op

    def new_entry(self, op: Op | None, gap: int = 1) -> tuple[int, Op | None]:
        entry = (self.next_index, op)
        self.ids_seen.append(self.next_index)
        self.next_index += gap
        return entry

    def apply_and_compare(self, entries: list[tuple[int, Op | None]]) -> None:
        expected = [self.model.apply(index, op) for index, op in entries]
        actual = self.state.apply(entries)
        self.history.extend(entries)
        mismatches = [
            (entry, a, e)
            for entry, a, e in zip(entries, actual, expected, strict=True)
            if not same(a, e)
        ]
        assert mismatches == []
        for result in actual:
            if isinstance(result.value, ReadAgain):
                reader, ids = result.value.reader, result.value.batch.message_ids
                again = self.state.messages_by_id(reader, ids)
                assert again == self.model.batch_read_again(reader, ids)

    # -- rules ---------------------------------------------------------------------------

    @initialize(names=st.lists(st.sampled_from(NAMES), min_size=2, max_size=4, unique=True))
    def some_users_logged_in(self, names: list[str]) -> None:
        """Start with users and sessions, so short runs reach more than the error paths."""
        for name, token in zip(names, TOKENS, strict=False):
            account_id = self.next_index
            self.apply_and_compare(
                [
                    self.new_entry(CreateAccount(name, "h0", "", self.clock)),
                    self.new_entry(Login(name, account_id, token, "", "", self.clock)),
                ]
            )

    @rule(
        data=st.data(),
        clock_step=st.sampled_from(CLOCK_STEPS),
        reopen_first=st.sampled_from([False] * 9 + [True]),
    )
    def apply_batch(self, data: st.DataObject, clock_step: int, reopen_first: bool) -> None:
        """A batch of new entries (with index gaps), maybe after entries already applied.

        Reopening is an argument rather than a rule of its own: it is slow, and
        rules are drawn with equal weight."""
        if reopen_first:
            self.reopen()
        self.clock += clock_step
        entries: list[tuple[int, Op | None]] = []
        if self.history:
            entries = data.draw(st.lists(st.sampled_from(self.history), max_size=2))
        for _ in range(data.draw(st.integers(min_value=1, max_value=8))):
            gap = data.draw(st.sampled_from([1, 1, 1, 2]))
            entries.append(self.new_entry(self.entry_op(data), gap))
        self.apply_and_compare(entries)

    def reopen(self) -> None:
        self.reader.close()
        self.state.close()
        self.state = ChatState(self.path)
        self.reader = ChatReader(self.path)

    @rule(
        parts=st.lists(st.sampled_from(PATTERN_PARTS), max_size=4),
        after=st.sampled_from(["", "B", "al", "alice", "b", "bob", "zz"]),
        limit=st.integers(min_value=1, max_value=4),
        scan=st.sampled_from([1, 2, 3, 10_000]),
    )
    def list_accounts(self, parts: list[str], after: str, limit: int, scan: int) -> None:
        pattern = "".join(parts)
        expected = self.model.list_accounts(pattern, after, limit, scan)
        assert self.reader.list_accounts(pattern, after, limit, scan) == expected
        assert self.state.list_accounts(pattern, after, limit, scan) == expected

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def applied_index_matches(self) -> None:
        assert self.state.applied_index == self.model.applied

    @invariant()
    def accounts_and_sessions_match(self) -> None:
        for name in NAMES:
            account = self.model.accounts.get(name)
            expected = Account(account[0], name, account[1]) if account else None
            assert self.reader.account(name) == self.state.account(name) == expected
        for token in TOKENS:
            user = self.model.session_user(token)
            expected_session = Session(user[0], user[1], user[2]) if user else None
            assert self.reader.session(token) == self.state.session(token) == expected_session

    @invariant()
    def inboxes_match(self) -> None:
        for name in NAMES:
            inbox = [m.stored() for m in self.model.inbox(name)]
            assert self.reader.messages_after(name, 0, 1000) == inbox
            assert self.state.messages_after(name, 0, 1000) == inbox
            if inbox:
                middle = inbox[len(inbox) // 2].id
                expected_page = [m for m in inbox if m.id > middle][:2]
                assert self.reader.messages_after(name, middle, 2) == expected_page
            unread = len(self.model.inbox(name, unread_only=True))
            assert self.reader.unread_count(name) == self.state.unread_count(name) == unread
            last = inbox[-1].id if inbox else 0
            assert self.reader.last_message_id(name) == last

    @invariant()
    def conversations_and_session_lists_match(self) -> None:
        for name, (account_id, _) in self.model.accounts.items():
            for partner in NAMES:
                expected = self.model.conversation(account_id, name, partner)
                whole = self.reader.history(account_id, name, partner, 0, 1000, 1 << 20)
                assert whole.messages == expected and whole.next_before_id == 0
                page = self.state.history(account_id, name, partner, 0, 1, 1 << 20)
                assert page.messages == expected[:1]
                assert page.next_before_id == (expected[0].id if len(expected) > 1 else 0)
                if len(expected) > 1:
                    rest = self.reader.history(
                        account_id, name, partner, page.next_before_id, 1000, 1 << 20
                    )
                    assert rest.messages == expected[1:]
            live = {
                token
                for token, (owner, deadline) in self.model.sessions.items()
                if owner == account_id and deadline > self.clock
            }
            listed = self.reader.sessions_of(account_id, self.clock)
            assert {row.token_hash for row in listed} == live

    @invariant()
    def stored_results_match(self) -> None:
        for rid in REQUEST_IDS[2:]:
            for kind in OP_TYPES:
                for name in NAMES:
                    stored = self.model.replies.get((name, rid, kind))
                    expected = self.model.replied(name, stored[2]) if stored else None
                    actual = self.reader.stored_result(name, rid, kind)
                    assert (actual is None) == (expected is None)
                    if expected is not None:
                        assert same(actual, expected)
                for token in TOKENS:
                    expected = self.model.session_reply(token, rid, kind, None)
                    actual = self.reader.session_result(token, rid, kind)
                    assert (actual is None) == (expected is None)
                    if expected is not None:
                        assert same(actual, expected)


ChatStateMatchesModel.TestCase.settings = settings(
    max_examples=30, stateful_step_count=25, deadline=None
)
test_chat_state_matches_model = ChatStateMatchesModel.TestCase
