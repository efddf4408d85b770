"""One test per rule of the chat state machine (chatnode/state.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, fields, replace
from pathlib import Path

import pytest

from chatnode import ops
from chatnode.ops import (
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
    Result,
    SendMessage,
    Sent,
    Touch,
)
from chatnode.state import (
    LEGACY_SESSION_TTL_MS,
    NO_SESSION,
    PRUNE_CHUNK,
    RESULT_TTL_MS,
    WRONG_CREDENTIALS,
    Account,
    ChatReader,
    ChatState,
    NamePage,
    Session,
    StoredMessage,
)

NOW = 1_700_000_000_000
DEADLINE = NOW + 10 * RESULT_TTL_MS  # of the sessions the helpers open: after every clock used


class Chat:
    """Drives a ChatState the way the shell does: ops at increasing log indexes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state = ChatState(path)
        self.index = self.state.applied_index

    def apply(self, *items: Op | None) -> list[Result]:
        entries = []
        for item in items:
            self.index += 1
            entries.append((self.index, item))
        return self.state.apply(entries)

    def one(self, op: Op) -> Result:
        return self.apply(op)[0]

    def register(self, name: str, request_id: str = "") -> int:
        assert self.one(CreateAccount(name, f"hash-of-{name}", request_id, NOW)).ok
        return self.index

    def login(self, name: str, token: str | None = None, request_id: str = "") -> str:
        token = token or f"token-{name}-{self.index}"
        account = self.state.account(name)
        assert account is not None
        login = Login(name, account.id, token, f"sealed-{token}", request_id, NOW, "", DEADLINE)
        assert self.one(login).ok
        return token

    def user(self, name: str) -> str:
        """Register and log in; returns the session token hash."""
        self.register(name)
        return self.login(name)

    def send(self, token: str, to: str, body: str = "hi", request_id: str = "", now: int = NOW):
        return self.one(SendMessage(token, to, body, request_id, now, False))

    def reopen(self) -> None:
        self.state.close()
        self.state = ChatState(self.path)

    def table_rows(self, table: str) -> int:
        with sqlite3.connect(self.path) as conn:
            return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[Chat]:
    chat = Chat(tmp_path / "state.db")
    yield chat
    chat.state.close()


def unauthenticated(result: Result) -> bool:
    return result.code == "UNAUTHENTICATED"


# -- accounts ---------------------------------------------------------------------


def test_create_account_stores_the_hash_as_given_under_the_log_index(chat: Chat) -> None:
    chat.apply(None, None)
    assert chat.one(CreateAccount("alice", "opaque$hash", "", NOW)) == Result()
    assert chat.state.account("alice") == Account(3, "alice", "opaque$hash")


def test_create_account_with_a_taken_name_is_already_exists(chat: Chat) -> None:
    chat.register("alice")
    result = chat.one(CreateAccount("alice", "other", "", NOW))
    assert result.code == "ALREADY_EXISTS"
    assert "alice" in result.message
    assert chat.state.account("alice").password_hash == "hash-of-alice"


# -- login and logout ---------------------------------------------------------------


def test_login_opens_a_session_and_reports_unread_and_last_message(chat: Chat) -> None:
    bob = chat.user("bob")
    alice_id = chat.register("alice")
    chat.send(bob, "alice", "one")
    chat.send(bob, "alice", "two")
    last = chat.index
    chat.send(bob, "bob", "not alice's")
    chat.one(ReadMessages(chat.login("alice"), 1, 1000))
    result = chat.one(Login("alice", alice_id, "tok", "sealed", "", NOW, "h", DEADLINE))
    assert result == Result(
        value=LoggedIn(sealed_token="sealed", seal_hash="h", unread_count=1, last_message_id=last)
    )
    assert chat.state.session("tok") == Session(alice_id, "alice", DEADLINE)


def test_login_with_no_messages_reports_zero(chat: Chat) -> None:
    account_id = chat.register("alice")
    result = chat.one(Login("alice", account_id, "tok", "s", "", NOW))
    assert result.value == LoggedIn(
        sealed_token="s", seal_hash="", unread_count=0, last_message_id=0
    )


def test_login_to_an_unknown_user_is_unauthenticated_with_the_bad_password_text(
    chat: Chat,
) -> None:
    result = chat.one(Login("nobody", 1, "tok", "s", "", NOW))
    assert result.code == "UNAUTHENTICATED"
    assert result.message == WRONG_CREDENTIALS == "wrong username or password"
    assert chat.state.session("tok") is None


def test_login_checked_against_a_replaced_account_is_unauthenticated(chat: Chat) -> None:
    """The leader verified the password of the old alice; a new alice must not get a session."""
    old_id = chat.register("alice")
    chat.one(DeleteAccount(chat.login("alice"), old_id))
    chat.register("alice")
    assert unauthenticated(chat.one(Login("alice", old_id, "tok", "s", "", NOW)))
    assert chat.state.session("tok") is None


def test_login_reusing_a_live_token_hash_is_refused_without_stealing_it(chat: Chat) -> None:
    chat.register("alice")
    chat.register("bob")
    chat.login("alice", "tok")
    result = chat.one(Login("bob", 2, "tok", "s", "", NOW))
    assert result.code == "INVALID_ARGUMENT"
    assert chat.state.session("tok") == Session(1, "alice", DEADLINE)


def test_logout_ends_only_that_session_and_then_needs_a_live_one_like_any_call(
    chat: Chat,
) -> None:
    """A Logout is an op on a session: once it is gone a second Logout (another request)
    is UNAUTHENTICATED, as the service answers before proposing."""
    chat.register("alice")
    first, second = chat.login("alice", "t1"), chat.login("alice", "t2")
    assert chat.one(Logout(first)) == Result()
    assert unauthenticated(chat.one(Logout(first)))
    assert unauthenticated(chat.one(Logout("never-existed")))
    assert chat.state.session(first) is None
    assert chat.state.session(second) == Session(1, "alice", DEADLINE)


@pytest.mark.parametrize(
    "op",
    [
        SendMessage("nope", "alice", "hi", "", NOW, False),
        ReadMessages("nope", 10, 1000),
        MarkRead("nope", (1,)),
        DeleteMessages("nope", (1,)),
        DeleteAccount("nope", 1),
        Logout("nope", NOW, "r"),
    ],
    ids=lambda op: op.kind,
)
def test_authenticated_ops_need_a_live_session(chat: Chat, op: Op) -> None:
    chat.register("alice")
    result = chat.one(op)
    assert result.code == "UNAUTHENTICATED"
    assert result.message == NO_SESSION
    assert chat.state.account("alice") is not None


def test_a_logged_out_token_no_longer_authenticates(chat: Chat) -> None:
    alice = chat.user("alice")
    chat.one(Logout(alice))
    assert unauthenticated(chat.send(alice, "alice"))


# -- messages -------------------------------------------------------------------


def test_send_message_stores_it_under_the_log_index(chat: Chat) -> None:
    alice = chat.user("alice")
    chat.register("bob")
    bob_id = chat.index
    result = chat.one(SendMessage(alice, "bob", "hello", "", NOW + 5, True))
    assert result == Result(
        value=Sent(
            message_id=chat.index,
            recipient_online=True,
            sender="alice",
            recipient_id=bob_id,
            sent_at_ms=NOW + 5,
        )
    )
    assert chat.state.messages_after("bob", 0, 10) == [
        StoredMessage(chat.index, "alice", "bob", "hello", NOW + 5, False)
    ]
    assert chat.state.unread_count("bob") == 1


def test_send_message_to_an_unknown_user_is_not_found(chat: Chat) -> None:
    alice = chat.user("alice")
    result = chat.send(alice, "ghost")
    assert result.code == "NOT_FOUND"
    assert "ghost" in result.message
    assert chat.table_rows("messages") == 0


def test_send_message_to_yourself_is_allowed(chat: Chat) -> None:
    alice = chat.user("alice")
    assert chat.send(alice, "alice").ok
    assert chat.state.unread_count("alice") == 1


def test_read_messages_returns_the_oldest_unread_and_marks_them_read(chat: Chat) -> None:
    bob = chat.user("bob")
    alice = chat.user("alice")
    ids = [chat.send(bob, "alice", f"m{i}", now=NOW + i).value.message_id for i in range(3)]
    chat.send(alice, "bob", "not alice's")
    result = chat.one(ReadMessages(alice, 2, 1000))
    assert result.value == MessagesRead(
        messages=(
            StoredMessage(id=ids[0], sender="bob", recipient="alice", body="m0",
                          sent_at_ms=NOW, read=True),
            StoredMessage(id=ids[1], sender="bob", recipient="alice", body="m1",
                          sent_at_ms=NOW + 1, read=True),
        ),
        remaining_unread=1,
    )  # fmt: skip
    assert [m.read for m in chat.state.messages_after("alice", 0, 10)] == [True, True, False]
    assert [m.id for m in chat.one(ReadMessages(alice, 10, 1000)).value.messages] == [ids[2]]
    assert chat.one(ReadMessages(alice, 10, 1000)).value == MessagesRead(
        messages=(), remaining_unread=0
    )
    assert chat.state.unread_count("bob") == 1


def test_read_messages_stops_before_max_bytes_but_returns_at_least_one(chat: Chat) -> None:
    alice = chat.user("alice")
    for body in ["é" * 5, "x" * 10, "y" * 10, "z"]:  # the first body is 10 bytes of UTF-8
        chat.send(alice, "alice", body)

    def bodies(max_bytes: int) -> list[str]:
        result = chat.one(ReadMessages(alice, 10, max_bytes))
        return [m.body for m in result.value.messages]

    assert bodies(3) == ["é" * 5]  # over max_bytes alone: still returned
    assert bodies(20) == ["x" * 10, "y" * 10]  # exactly max_bytes
    assert bodies(0) == ["z"]


def test_mark_read_counts_only_the_callers_unread_messages(chat: Chat) -> None:
    bob = chat.user("bob")
    alice = chat.user("alice")
    to_alice = [chat.send(bob, "alice").value.message_id for _ in range(3)]
    to_bob = chat.send(alice, "bob").value.message_id
    chat.one(MarkRead(alice, (to_alice[0],)))
    result = chat.one(MarkRead(alice, (to_alice[0], to_alice[1], to_alice[1], to_bob, 999)))
    assert result == Result(value=Marked(marked_count=1))
    assert chat.state.unread_count("alice") == 1
    assert chat.state.unread_count("bob") == 1
    assert chat.one(MarkRead(alice, ())) == Result(value=Marked(marked_count=0))


def test_delete_messages_by_sender_or_recipient_removes_the_one_row(chat: Chat) -> None:
    alice, bob, carol = chat.user("alice"), chat.user("bob"), chat.user("carol")
    a_to_b = chat.send(alice, "bob").value.message_id
    b_to_a = chat.send(bob, "alice").value.message_id
    c_to_b = chat.send(carol, "bob").value.message_id
    result = chat.one(DeleteMessages(alice, (a_to_b, b_to_a, c_to_b, 12345)))
    assert result == Result(value=MessagesDeleted(deleted_count=2))
    assert chat.state.messages_after("bob", 0, 10) == [
        StoredMessage(c_to_b, "carol", "bob", "hi", NOW, False)
    ]
    assert chat.state.messages_after("alice", 0, 10) == []
    assert chat.one(DeleteMessages(alice, (a_to_b,))) == Result(
        value=MessagesDeleted(deleted_count=0)
    )


def test_a_reregistered_name_cannot_delete_what_the_old_account_sent(chat: Chat) -> None:
    old_alice = chat.user("alice")
    chat.register("bob")
    sent = chat.send(old_alice, "bob").value.message_id
    chat.one(DeleteAccount(old_alice, 1))
    new_alice = chat.user("alice")
    assert chat.one(DeleteMessages(new_alice, (sent,))) == Result(
        value=MessagesDeleted(deleted_count=0)
    )
    assert [m.sender for m in chat.state.messages_after("bob", 0, 10)] == ["alice"]


def test_messages_after_pages_in_id_order_and_skips_deleted(chat: Chat) -> None:
    alice = chat.user("alice")
    ids = [chat.send(alice, "alice", str(i)).value.message_id for i in range(5)]
    chat.one(ReadMessages(alice, 1, 1000))
    chat.one(DeleteMessages(alice, (ids[2],)))
    assert [m.id for m in chat.state.messages_after("alice", 0, 10)] == [
        ids[0],
        ids[1],
        ids[3],
        ids[4],
    ]
    assert [m.id for m in chat.state.messages_after("alice", ids[1], 1)] == [ids[3]]
    assert chat.state.messages_after("alice", 0, 0) == []
    assert chat.state.messages_after("alice", 0, -1) == []


# -- delete account ----------------------------------------------------------------


def test_delete_account_with_a_mismatched_account_id_changes_nothing(chat: Chat) -> None:
    alice = chat.user("alice")
    result = chat.one(DeleteAccount(alice, 999))
    assert result.code == "UNAUTHENTICATED"
    assert chat.state.account("alice") is not None
    assert chat.state.session(alice) is not None


def test_delete_account_removes_account_sessions_and_inbox_but_not_sent_mail(
    chat: Chat,
) -> None:
    alice_id = chat.register("alice")
    alice, other_alice_session = chat.login("alice"), chat.login("alice")
    bob = chat.user("bob")
    chat.send(bob, "alice", "read one")
    chat.one(ReadMessages(alice, 10, 1000))
    chat.send(bob, "alice", "unread one")
    chat.send(alice, "alice", "note to self")
    chat.send(alice, "bob", "from alice")
    assert chat.one(DeleteAccount(alice, alice_id)) == Result(
        value=AccountDeleted(username="alice", account_id=alice_id)
    )
    assert chat.state.account("alice") is None
    assert chat.state.session(alice) is None
    assert chat.state.session(other_alice_session) is None
    assert chat.table_rows("sessions") == 1  # bob's: no orphans left behind
    assert chat.state.messages_after("alice", 0, 10) == []
    assert chat.state.unread_count("alice") == 0
    assert [(m.sender, m.body) for m in chat.state.messages_after("bob", 0, 10)] == [
        ("alice", "from alice")
    ]
    assert chat.state.list_accounts("", "", 10).names == ["bob"]


def test_a_deleted_name_can_register_again_with_a_new_id_and_an_empty_inbox(
    chat: Chat,
) -> None:
    old_id = chat.register("alice")
    old_session = chat.login("alice")
    bob = chat.user("bob")
    chat.send(bob, "alice", "for the old alice")
    chat.one(DeleteAccount(old_session, old_id))
    new_id = chat.register("alice")
    assert new_id > old_id
    assert chat.state.account("alice") == Account(new_id, "alice", "hash-of-alice")
    assert chat.state.session(old_session) is None
    new_session = chat.login("alice")
    assert chat.state.session(new_session) == Session(new_id, "alice", DEADLINE)
    assert chat.state.unread_count("alice") == 0


# -- session expiry and password upgrades ---------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda t, now: SendMessage(t, "alice", "hi", "", now, False),
        lambda t, now: ReadMessages(t, 10, 1000, now),
        lambda t, now: MarkRead(t, (1,), now),
        lambda t, now: DeleteMessages(t, (1,), now),
        lambda t, now: DeleteAccount(t, 1, now),
        lambda t, now: Touch(t, now, 0),
    ],
    ids=["send", "read", "mark", "delete", "delete_account", "touch"],
)
def test_a_session_stops_authenticating_at_its_deadline_by_the_ops_clock(chat: Chat, make) -> None:
    alice = chat.user("alice")
    expired = chat.one(make(alice, DEADLINE))
    assert expired.code == "UNAUTHENTICATED" and expired.message == NO_SESSION
    assert chat.state.account("alice") is not None
    # Stamped earlier, applied later: judged at the newest time applied, still expired.
    assert chat.one(make(alice, DEADLINE - 1)) == expired
    assert chat.state.clock_ms == DEADLINE


def test_time_in_the_state_never_goes_backwards(chat: Chat) -> None:
    """Two leaders' stamps applied out of order (or a leader whose clock is behind): each
    op is judged at the later of its time and the newest applied, so sent_at never
    decreases in id order, and the clock survives a reopen."""
    alice = chat.user("alice")
    stamps = [NOW + 50, NOW + 10, NOW + 70, 1, NOW + 70]
    for stamp in stamps:
        assert chat.send(alice, "alice", now=stamp).ok
    sent = [m.sent_at_ms for m in chat.state.messages_after("alice", 0, 10)]
    assert sent == [NOW + 50, NOW + 50, NOW + 70, NOW + 70, NOW + 70]
    chat.reopen()
    assert chat.state.clock_ms == NOW + 70
    assert chat.send(alice, "alice", now=NOW).value.sent_at_ms == NOW + 70


def test_a_renewal_moves_the_deadline_later_and_never_earlier(chat: Chat) -> None:
    alice = chat.user("alice")
    assert chat.one(Touch(alice, NOW, DEADLINE + 5)).ok
    assert chat.state.session(alice).expires_ms == DEADLINE + 5
    assert chat.one(ReadMessages(alice, 1, 1000, NOW, DEADLINE - 100)).ok
    assert chat.state.session(alice).expires_ms == DEADLINE + 5
    assert chat.send(alice, "alice", now=DEADLINE).ok  # renewed: still valid
    chat.one(SendMessage(alice, "alice", "hi", "", NOW, False, DEADLINE + 50))
    assert chat.state.session(alice).expires_ms == DEADLINE + 50
    assert chat.one(MarkRead(alice, (), NOW)).ok  # 0: no renewal
    assert chat.state.session(alice).expires_ms == DEADLINE + 50


def test_an_expired_session_cannot_be_renewed(chat: Chat) -> None:
    alice = chat.user("alice")
    assert unauthenticated(chat.one(Touch(alice, DEADLINE, DEADLINE + RESULT_TTL_MS)))
    assert chat.state.session(alice).expires_ms == DEADLINE


def test_expired_sessions_are_pruned_in_bounded_chunks_as_sessions_open(chat: Chat) -> None:
    account_id = chat.register("alice")
    for i in range(PRUNE_CHUNK + 10):
        chat.one(Login("alice", account_id, f"old{i}", "", "", NOW, "", NOW + i + 1))
    live = chat.login("alice", "live")
    assert chat.table_rows("sessions") == PRUNE_CHUNK + 11
    later = NOW + PRUNE_CHUNK + 10
    assert chat.one(Login("alice", account_id, "new1", "", "", later, "", DEADLINE)).ok
    assert chat.table_rows("sessions") == 10 + 2  # the oldest expired went first
    assert chat.state.session("old0") is None and chat.state.session("old70") is not None
    chat.one(Login("nobody", 99, "x", "", "", later, "", DEADLINE))  # refused, still prunes
    assert chat.table_rows("sessions") == 2
    assert chat.state.session(live) is not None


def test_a_login_entry_without_a_deadline_gets_the_legacy_lifetime(chat: Chat) -> None:
    account_id = chat.register("alice")
    assert chat.one(Login("alice", account_id, "tok", "", "", NOW)).ok
    assert chat.state.session("tok").expires_ms == NOW + LEGACY_SESSION_TTL_MS


def test_a_login_carrying_a_new_hash_upgrades_the_account_and_names_it(chat: Chat) -> None:
    account_id = chat.register("alice")
    first = chat.one(Login("alice", account_id, "t1", "s1", "r1", NOW, "new-hash", DEADLINE))
    assert first.value.seal_hash == "new-hash"
    assert chat.state.account("alice").password_hash == "new-hash"
    # A retry is answered from the first result and changes nothing.
    retry = chat.one(Login("alice", account_id, "t2", "s2", "r1", NOW, "newer-hash", DEADLINE))
    assert retry == first and chat.state.account("alice").password_hash == "new-hash"
    # An entry from before upgrades keeps the account's hash.
    assert chat.one(Login("alice", account_id, "t3", "s3", "", NOW)).value.seal_hash == ""
    assert chat.state.account("alice").password_hash == "new-hash"


def test_a_login_checked_against_a_replaced_account_upgrades_nothing(chat: Chat) -> None:
    old_id = chat.register("alice")
    chat.one(DeleteAccount(chat.login("alice"), old_id))
    chat.register("alice")
    assert unauthenticated(chat.one(Login("alice", old_id, "t", "", "", NOW, "upgrade", DEADLINE)))
    assert chat.state.account("alice").password_hash == "hash-of-alice"


def test_entries_written_before_the_new_fields_still_decode() -> None:
    old = b'{"op":"read_messages","token_hash":"t","limit":5,"max_bytes":9}'
    assert ops.decode(old) == ReadMessages("t", 5, 9, 0, 0)
    old_login = (
        b'{"op":"login","username":"a","account_id":1,"token_hash":"t",'
        b'"sealed_token":"","request_id":"","now_ms":7}'
    )
    assert ops.decode(old_login) == Login("a", 1, "t", "", "", 7, "", 0)
    with pytest.raises(ops.MalformedOp):
        ops.decode(b'{"op":"touch","token_hash":"t","now_ms":1}')  # a field it always has
    op = Touch("t", 1, 2)
    assert ops.decode(ops.encode(op)) == op


def test_a_database_from_before_expiry_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with closing(sqlite3.connect(path)) as old:
        old.executescript(
            """
            CREATE TABLE sessions (token_hash TEXT PRIMARY KEY NOT NULL,
                account_id INTEGER NOT NULL, created_ms INTEGER NOT NULL) STRICT;
            INSERT INTO sessions VALUES ('tok', 1, 1000);
            """
        )
    with ChatState(path) as state:
        state.apply([(1, CreateAccount("alice", "h", "", NOW))])
        with sqlite3.connect(path) as conn:
            row = conn.execute("SELECT expires_ms FROM sessions WHERE token_hash = 'tok'")
            assert row.fetchone() == (1000 + LEGACY_SESSION_TTL_MS,)


def test_a_database_from_before_session_lists_is_migrated(tmp_path: Path) -> None:
    """Sessions opened before ListSessions show their creation as their last use and no
    label, and take uses and EndSession like new ones."""
    path = tmp_path / "old.db"
    with closing(sqlite3.connect(path)) as old:
        old.executescript(
            """
            CREATE TABLE accounts (id INTEGER PRIMARY KEY NOT NULL, username TEXT NOT NULL,
                password_hash TEXT NOT NULL, created_ms INTEGER NOT NULL) STRICT;
            INSERT INTO accounts VALUES (1, 'alice', 'h', 1000);
            CREATE TABLE sessions (token_hash TEXT PRIMARY KEY NOT NULL,
                account_id INTEGER NOT NULL, created_ms INTEGER NOT NULL,
                expires_ms INTEGER NOT NULL) STRICT;
            INSERT INTO sessions VALUES ('aa', 1, 1000, 9000000000000);
            INSERT INTO sessions VALUES ('bb', 1, 2000, 9000000000000);
            """
        )
    with ChatState(path) as state:
        listed = state.sessions_of(1, NOW)
        assert [(row.token_hash, row.used_ms, row.client_label) for row in listed] == [
            ("bb", 2000, ""),
            ("aa", 1000, ""),
        ]
        state.apply([(5, Touch("aa", NOW, 0)), (6, EndSession("aa", "bb", NOW + 1, "r"))])
        assert [(row.token_hash, row.used_ms) for row in state.sessions_of(1, NOW)] == [
            ("aa", NOW + 1)
        ]


# -- exactly once ------------------------------------------------------------------


def test_a_retried_send_returns_the_first_result_and_sends_nothing(chat: Chat) -> None:
    alice = chat.user("alice")
    chat.register("bob")
    first = chat.send(alice, "bob", "once", request_id="r1")
    retry = chat.one(SendMessage(alice, "bob", "once", "r1", NOW + 1000, True))
    assert retry == first
    assert len(chat.state.messages_after("bob", 0, 10)) == 1
    assert chat.state.stored_result("alice", "r1", "send_message") == first


def test_a_retried_read_costs_the_same_to_apply_whatever_the_first_batch_held(
    chat: Chat,
) -> None:
    """Every replica applies a retry: it answers with the stored ids and the reader's name
    (the leader reads the messages again), never by reading the batch's rows."""
    alice = chat.user("alice")
    for i in range(300):
        chat.send(alice, "alice", f"note {i}")
    first = chat.one(ReadMessages(alice, 1000, 1 << 30, NOW, 0, "r1"))
    assert len(first.value.messages) == 300
    statements: list[str] = []
    chat.state.connection.set_trace_callback(statements.append)
    retry = chat.one(ReadMessages(alice, 1000, 1 << 30, NOW + 1, 0, "r1"))
    chat.state.connection.set_trace_callback(None)
    ids = tuple(m.id for m in first.value.messages)
    assert retry.value == ReadAgain(
        reader="alice", batch=ReadIds(message_ids=ids, remaining_unread=0)
    )
    assert len(statements) <= 8, statements
    again = chat.state.messages_by_id("alice", ids)
    assert [asdict(m) for m in again] == [asdict(m) for m in first.value.messages]


def test_a_retried_login_returns_the_first_token_and_opens_no_session(chat: Chat) -> None:
    chat.register("alice")
    first = chat.one(Login("alice", 1, "tok1", "sealed1", "r1", NOW))
    retry = chat.one(Login("alice", 1, "tok2", "sealed2", "r1", NOW + 1))
    assert retry == first
    assert retry.value.sealed_token == "sealed1"
    assert chat.state.session("tok2") is None


def test_a_retried_create_account_returns_ok_even_though_the_name_now_exists(
    chat: Chat,
) -> None:
    assert chat.one(CreateAccount("alice", "h1", "r1", NOW)) == Result()
    assert chat.one(CreateAccount("alice", "h2", "r1", NOW)) == Result()
    assert chat.one(CreateAccount("alice", "h3", "r2", NOW)).code == "ALREADY_EXISTS"
    assert chat.state.account("alice").password_hash == "h1"


def test_errors_are_stored_and_replayed_too(chat: Chat) -> None:
    alice = chat.user("alice")
    first = chat.send(alice, "bob", request_id="r1")
    chat.register("bob")
    assert first.code == "NOT_FOUND"
    assert chat.send(alice, "bob", request_id="r1") == first
    assert chat.table_rows("messages") == 0
    assert chat.send(alice, "bob", request_id="r2").ok


def test_the_same_request_id_from_another_user_is_independent(chat: Chat) -> None:
    alice, bob = chat.user("alice"), chat.user("bob")
    from_alice = chat.send(alice, "bob", request_id="same")
    from_bob = chat.send(bob, "alice", request_id="same")
    assert from_alice.value.message_id != from_bob.value.message_id
    assert chat.table_rows("messages") == 2


def test_whoever_registers_a_deleted_name_starts_with_none_of_its_stored_replies(
    chat: Chat,
) -> None:
    """The same request ids as the name's former owner act afresh; the former owner's
    retries, on its ended session, still get their first replies."""
    chat.user("bob")
    old_id = chat.register("alice", request_id="c1")
    old = chat.login("alice", request_id="l1")
    sent = chat.send(old, "bob", "from the old alice", request_id="r1")
    deleted = chat.one(DeleteAccount(old, old_id, NOW, "d1"))
    assert deleted.ok
    assert chat.one(CreateAccount("alice", "h2", "c1", NOW)) == Result()
    assert chat.state.account("alice").password_hash == "h2"  # created, not replayed
    new = chat.login("alice", request_id="l1")
    assert chat.state.session(new) is not None
    again = chat.send(new, "bob", "from the new alice", request_id="r1")
    assert again.ok and again.value.message_id != sent.value.message_id
    assert chat.one(DeleteAccount(new, chat.state.account("alice").id, NOW, "d1")).ok
    assert chat.send(old, "bob", "from the old alice", request_id="r1") == sent
    assert chat.one(DeleteAccount(old, old_id, NOW, "d1")) == deleted
    assert [m.body for m in chat.state.messages_after("bob", 0, 10)] == [
        "from the old alice",
        "from the new alice",
    ]


def test_an_empty_request_id_is_never_deduplicated(chat: Chat) -> None:
    alice = chat.user("alice")
    chat.send(alice, "alice")
    chat.send(alice, "alice")
    assert chat.table_rows("messages") == 2
    assert chat.table_rows("request_results") == 0


def test_a_stored_result_expires_after_a_day_of_op_time(chat: Chat) -> None:
    alice = chat.user("alice")
    first = chat.send(alice, "alice", request_id="r", now=NOW)
    almost = chat.send(alice, "alice", request_id="r", now=NOW + RESULT_TTL_MS - 1)
    assert almost == first
    later = chat.send(alice, "alice", request_id="r", now=NOW + RESULT_TTL_MS)
    assert later.value.message_id == chat.index != first.value.message_id
    assert chat.send(alice, "alice", request_id="r", now=NOW + RESULT_TTL_MS) == later


def test_expired_results_are_pruned_in_bounded_chunks_as_new_ones_are_stored(
    chat: Chat,
) -> None:
    alice = chat.user("alice")
    for i in range(PRUNE_CHUNK + 10):
        chat.send(alice, "alice", request_id=f"old{i}", now=NOW)
    assert chat.table_rows("request_results") == PRUNE_CHUNK + 10
    chat.send(alice, "alice", request_id="new1", now=NOW + RESULT_TTL_MS)
    assert chat.table_rows("request_results") == 10 + 1
    chat.send(alice, "alice", now=NOW + RESULT_TTL_MS)  # no request_id: stores, prunes nothing
    assert chat.table_rows("request_results") == 10 + 1
    chat.send(alice, "alice", request_id="new2", now=NOW + RESULT_TTL_MS)
    assert chat.table_rows("request_results") == 2
    assert chat.state.stored_result("alice", "old0", "send_message") is None
    assert chat.state.stored_result("alice", "new1", "send_message") is not None


# -- malformed ops ------------------------------------------------------------------

VALID_OPS: list[Op] = [
    CreateAccount("carol", "h", "r", NOW),
    Login("alice", 1, "t2", "s", "r", NOW),
    Logout("t1"),
    SendMessage("t1", "alice", "hi", "r", NOW, False),
    ReadMessages("t1", 10, 1000),
    MarkRead("t1", (3,)),
    DeleteMessages("t1", (3,)),
    DeleteAccount("t1", 1),
]
WRONG_TYPES: list[object] = [None, 1.5, "7", 7, True, [1], (1,)]
OUT_OF_RANGE: dict[type, list[object]] = {
    str: ["\ud800"],  # a lone surrogate: JSON can carry it, SQLite cannot store it
    int: [2**63, -(2**63) - 1],
    tuple: [(2**63,), (True,), ("1",)],
}


def malformed_variants() -> Iterator[Op]:
    """Every valid op with one field made wrong, in every way the log could carry."""
    for op in VALID_OPS:
        for field in fields(op):
            good_type = type(getattr(op, field.name))
            bad_values = [v for v in WRONG_TYPES if type(v) is not good_type]
            for bad in bad_values + OUT_OF_RANGE.get(good_type, []):
                yield replace(op, **{field.name: bad})


def test_malformed_ops_are_invalid_argument_and_change_nothing(chat: Chat) -> None:
    chat.register("alice")
    chat.login("alice", "t1")
    chat.send("t1", "alice")
    before = [chat.table_rows(t) for t in ("accounts", "sessions", "messages")]
    variants = list(malformed_variants())
    results = chat.apply(*variants)
    wrong = [
        (op, r) for op, r in zip(variants, results, strict=True) if r.code != "INVALID_ARGUMENT"
    ]
    assert wrong == []
    assert [chat.table_rows(t) for t in ("accounts", "sessions", "messages")] == before
    assert chat.state.applied_index == chat.index


@pytest.mark.parametrize(
    "op",
    [
        ReadMessages("t1", 0, 1000),
        ReadMessages("t1", -1, 1000),
        SendMessage("t1", "alice", "hi", "r", -1, False),
    ],
)
def test_out_of_range_values_are_invalid_argument(chat: Chat, op: Op) -> None:
    chat.user("alice")
    assert chat.one(op).code == "INVALID_ARGUMENT"


def test_ops_the_service_would_refuse_still_apply_deterministically(chat: Chat) -> None:
    """Input policy (docs/api.md, "Validation and errors") is the service's; the state applies
    what the log says."""
    assert chat.one(CreateAccount("not a valid name!", "h", "", NOW)).ok
    assert chat.one(Login("not a valid name!", 1, "t", "", "", NOW)).ok
    assert chat.send("t", "not a valid name!", body="").ok


@pytest.mark.parametrize(
    "payload",
    [
        b'{"op":"mark_read","token_hash":7,"message_ids":["x",{"a":1}]}',
        b'{"op":"mark_read","token_hash":"t","message_ids":[1,"x"]}',
        b'{"op":"send_message","token_hash":null,"recipient":[],"body":{},'
        b'"request_id":1e999,"now_ms":"soon","recipient_online":"yes"}',
        b'{"op":"read_messages","token_hash":"t","limit":1e3,"max_bytes":-5}',
        b'{"op":"touch","token_hash":"t","now_ms":true,"session_deadline_ms":1}',
        b'{"op":"login","username":"\\ud800","account_id":1,"token_hash":"t",'
        b'"sealed_token":"","request_id":"","now_ms":0}',
        b'{"op":"no_such_op"}',
        b'{"token_hash":"t"}',
        b"[1]",
        b"{",
    ],
)
def test_ill_typed_payloads_do_not_decode(payload: bytes) -> None:
    """The applier applies such an entry as a no-op (tests/chat/test_applier.py)."""
    with pytest.raises(ops.MalformedOp):
        ops.decode(payload)


# -- the log: batches, replay, restart ---------------------------------------------


def test_noop_entries_and_gaps_only_advance_applied_index(chat: Chat) -> None:
    assert chat.state.apply([(1, None), (5, CreateAccount("a", "h", "", NOW)), (9, None)]) == [
        Result(),
        Result(),
        Result(),
    ]
    assert chat.state.applied_index == 9
    assert chat.state.account("a") == Account(5, "a", "h")
    assert chat.state.apply([]) == []
    assert chat.state.applied_index == 9


def test_entries_already_applied_are_skipped_and_answer_empty(chat: Chat) -> None:
    batch = [(1, CreateAccount("a", "h", "", NOW)), (2, CreateAccount("b", "h", "", NOW))]
    assert chat.state.apply(batch) == [Result(), Result()]
    replay = chat.state.apply([*batch, (3, CreateAccount("a", "h", "", NOW))])
    assert replay[:2] == [Result(), Result()]
    assert replay[2].code == "ALREADY_EXISTS"
    assert chat.state.applied_index == 3
    assert chat.state.apply(batch) == [Result(), Result()]
    assert chat.state.applied_index == 3


def test_a_failed_batch_leaves_no_trace(chat: Chat) -> None:
    chat.register("alice")
    not_an_op: Op = "not an op"  # type: ignore[assignment]
    with pytest.raises(TypeError):
        chat.state.apply([(10, CreateAccount("bob", "h", "", NOW)), (11, not_an_op)])
    assert chat.state.applied_index == 1
    assert chat.state.account("bob") is None
    chat.reopen()
    assert chat.state.applied_index == 1


def test_reopening_keeps_applied_index_and_data(chat: Chat) -> None:
    alice = chat.user("alice")
    chat.send(alice, "alice", request_id="r")
    chat.apply(None)
    chat.reopen()
    assert chat.state.applied_index == chat.index == 4
    assert chat.state.session(alice) == Session(1, "alice", DEADLINE)
    assert chat.state.unread_count("alice") == 1
    assert chat.state.stored_result("alice", "r", "send_message").value.message_id == 3


def test_the_database_is_wal_with_normal_sync(chat: Chat) -> None:
    with sqlite3.connect(chat.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert chat.state.connection.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_a_batch_of_a_thousand_sends_applies_in_one_transaction(chat: Chat) -> None:
    """What makes a batch cheap is one transaction for all of it (speed is the benchmark's
    business, `chatctl bench`, not a timed test's)."""
    alice = chat.user("alice")
    entries = [
        (chat.index + 1 + i, SendMessage(alice, "alice", f"message {i}", f"r{i}", NOW, False))
        for i in range(1000)
    ]
    with traced(chat.state.connection) as statements:
        results = chat.state.apply(entries)
    assert all(r.ok for r in results)
    transactions = [s for s in statements if s.split()[0].upper() in ("BEGIN", "COMMIT")]
    assert [t.split()[0].upper() for t in transactions] == ["BEGIN", "COMMIT"], transactions


# -- readers and queries ---------------------------------------------------------------


def test_a_reader_sees_what_the_writer_committed(chat: Chat) -> None:
    with ChatReader(chat.path) as reader:
        assert reader.account("alice") is None
        alice = chat.user("alice")
        chat.send(alice, "alice", request_id="r")
        assert reader.account("alice") == Account(1, "alice", "hash-of-alice")
        assert reader.session(alice) == Session(1, "alice", DEADLINE)
        assert reader.unread_count("alice") == 1
        assert reader.last_message_id("alice") == 3
        assert [m.id for m in reader.messages_after("alice", 0, 10)] == [3]
        assert reader.list_accounts("a*", "", 10).names == ["alice"]
        assert reader.stored_result("alice", "r", "send_message") == chat.state.stored_result(
            "alice", "r", "send_message"
        )


def test_a_reader_cannot_write(chat: Chat) -> None:
    with ChatReader(chat.path) as reader, pytest.raises(sqlite3.OperationalError):
        reader.connection.execute("DELETE FROM accounts")


@pytest.fixture
def directory(chat: Chat) -> Chat:
    for name in ["alice", "alfred", "al", "Albert", "bob", "bobby", "carol", "a.b", "a-b"]:
        chat.register(name)
    return chat


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("", ["Albert", "a-b", "a.b", "al", "alfred", "alice", "bob", "bobby", "carol"]),
        ("*", ["Albert", "a-b", "a.b", "al", "alfred", "alice", "bob", "bobby", "carol"]),
        ("al*", ["al", "alfred", "alice"]),
        ("Al*", ["Albert"]),
        ("a?b", ["a-b", "a.b"]),
        ("*o*", ["bob", "bobby", "carol"]),
        ("[bc]*", ["bob", "bobby", "carol"]),
        ("bob", ["bob"]),
        ("zed*", []),
    ],
)
def test_list_accounts_matches_shell_wildcards_case_sensitively(
    directory: Chat, pattern: str, expected: list[str]
) -> None:
    assert directory.state.list_accounts(pattern, "", 100) == NamePage(expected, "")


def test_list_accounts_pages_after_the_last_name(directory: Chat) -> None:
    state = directory.state
    assert state.list_accounts("*", "", 3) == NamePage(["Albert", "a-b", "a.b"], "a.b")
    assert state.list_accounts("*", "a.b", 3) == NamePage(["al", "alfred", "alice"], "alice")
    assert state.list_accounts("al*", "al", 10) == NamePage(["alfred", "alice"], "")
    assert state.list_accounts("al*", "alice", 10) == NamePage([], "")
    assert state.list_accounts("b*", "a", 1) == NamePage(["bob"], "bob")


def test_a_page_examines_a_bounded_number_of_names_and_resumes_where_it_stopped(
    directory: Chat,
) -> None:
    """A pattern that matches little costs a page no more than `scan` names: the page
    may come back short, even empty, with where to resume, until the range is done."""
    state = directory.state
    assert state.list_accounts("*o*", "", 10, scan=4) == NamePage([], "al")
    names, after, pages = [], "", 0
    while True:
        page = state.list_accounts("*o*", after, 10, scan=4)
        names += page.names
        pages += 1
        if not page.resume_after:
            break
        after = page.resume_after
    assert names == ["bob", "bobby", "carol"] and pages == 3
    with traced(state.connection) as statements:
        state.list_accounts("*zzz*", "", 10, scan=4)
    assert len(statements) == 1


def test_list_accounts_prefix_bounds_hold_at_code_point_edges(chat: Chat) -> None:
    names = ["x\U0010ffff", "x\U0010ffffz", "y", "a\ud7ff", "a\ue000", "a\uffff"]
    for name in names:
        chat.register(name)
    assert chat.state.list_accounts("x\U0010ffff*", "", 10).names == ["x\U0010ffff", "x\U0010ffffz"]
    assert chat.state.list_accounts("x*", "", 10).names == ["x\U0010ffff", "x\U0010ffffz"]
    assert chat.state.list_accounts("a\ud7ff*", "", 10).names == ["a\ud7ff"]


@contextmanager
def traced(connection: sqlite3.Connection) -> Iterator[list[str]]:
    """The statements the connection executes while the block runs, as SQLite ran them."""
    statements: list[str] = []
    connection.set_trace_callback(statements.append)
    try:
        yield statements
    finally:
        connection.set_trace_callback(None)


def query_plans(state: ChatState | ChatReader, run) -> dict[str, list[str]]:
    """Every statement run() makes the connection execute, with its query plan."""
    with traced(state.connection) as statements:
        run()
    plans = {}
    for sql in statements:
        if sql.split()[0].upper() in {"SELECT", "UPDATE", "DELETE", "INSERT"}:
            rows = state.connection.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
            plans[sql] = [row[3] for row in rows]
    return plans


def test_every_query_is_served_by_an_index(chat: Chat) -> None:
    for name in ["alice", "bob"]:
        chat.register(name)
    chat.login("alice", "ta")
    chat.login("bob", "tb")

    def exercise_writer() -> None:
        chat.apply(
            CreateAccount("alice", "h", "r0", NOW),
            Login("bob", 2, "tb2", "s", "r1", NOW),
            SendMessage("ta", "bob", "hi", "r2", NOW, False, DEADLINE + 1),
            Touch("ta", NOW, DEADLINE + 2),
            Login("alice", 1, "ta2", "s", "", NOW, "upgraded", DEADLINE),
            SendMessage("ta", "ghost", "hi", "", NOW, False),
            ReadMessages("tb", 10, 1000),
            MarkRead("tb", (1, 2)),
            DeleteMessages("ta", (1, 2)),
            EndSession("ta", "ta2", NOW, "r3"),
            Logout("tb2"),
            DeleteAccount("tb", 2),
        )

    def exercise_reader(reader: ChatReader) -> None:
        reader.session("ta")
        reader.account("alice")
        reader.stored_result("alice", "r2", "send_message")
        reader.list_accounts("", "", 10)
        reader.list_accounts("a*", "a", 10)
        reader.list_accounts("*x", "", 10)
        reader.messages_after("alice", 0, 10)
        reader.unread_count("alice")
        reader.last_message_id("alice")
        reader.history(1, "alice", "bob", 0, 10, 1000)
        reader.history(1, "alice", "bob", 5, 10, 1000)
        reader.sessions_of(1, NOW)
        reader.session_with_id(1, "ta"[:32], NOW)

    plans = query_plans(chat.state, exercise_writer)
    with ChatReader(chat.path) as reader:
        plans |= query_plans(reader, lambda: exercise_reader(reader))
    assert len(plans) >= 20
    bad = {
        sql: plan
        for sql, plan in plans.items()
        if any(step.startswith("SCAN") or "TEMP B-TREE" in step for step in plan)
    }
    assert bad == {}
    unread_plans = [plan for sql, plan in plans.items() if "read = 0" in sql and "SELECT" in sql]
    assert unread_plans
    assert all("messages_unread_by_recipient" in " ".join(plan) for plan in unread_plans)
    count_plans = [plan for sql, plan in plans.items() if "count(*)" in sql]
    assert count_plans
    assert all("COVERING INDEX messages_unread_by_recipient" in plan[0] for plan in count_plans)


# -- exactly once for every mutating op ----------------------------------------------


def test_a_retried_read_returns_the_same_batch_and_marks_nothing_more(chat: Chat) -> None:
    alice = chat.user("alice")
    ids = [chat.send(alice, "alice", f"m{i}").value.message_id for i in range(3)]
    first = chat.one(ReadMessages(alice, 2, 1000, NOW, 0, "r"))
    assert [m.id for m in first.value.messages] == ids[:2]
    replay = Result(
        value=ReadAgain(
            reader="alice", batch=ReadIds(message_ids=tuple(ids[:2]), remaining_unread=1)
        )
    )
    assert chat.one(ReadMessages(alice, 2, 1000, NOW + 1, 0, "r")) == replay
    assert chat.state.stored_result("alice", "r", ReadMessages.kind) == replay
    assert chat.state.unread_count("alice") == 1
    rest = chat.one(ReadMessages(alice, 2, 1000, NOW, 0, "r2"))
    assert [m.id for m in rest.value.messages] == ids[2:]


def test_a_retried_read_leaves_out_what_was_deleted_since_and_stores_no_text(
    chat: Chat,
) -> None:
    alice = chat.user("alice")
    ids = [chat.send(alice, "alice", f"secret {i}").value.message_id for i in range(2)]
    first = chat.one(ReadMessages(alice, 10, 1000, NOW, 0, "r"))
    with sqlite3.connect(chat.path) as conn:
        (stored,) = conn.execute("SELECT result FROM request_results").fetchone()
    assert "secret" not in stored
    assert chat.one(DeleteMessages(alice, (ids[0],), NOW)).value == MessagesDeleted(deleted_count=1)
    retry = chat.one(ReadMessages(alice, 10, 1000, NOW, 0, "r"))
    again = chat.state.messages_by_id("alice", retry.value.batch.message_ids)
    assert [asdict(m) for m in again] == [asdict(m) for m in first.value.messages[1:]]


@pytest.mark.parametrize(
    ("make", "first_value"),
    [
        (lambda token, ids, rid: MarkRead(token, ids, NOW, 0, rid), Marked(1)),
        (lambda token, ids, rid: DeleteMessages(token, ids, NOW, 0, rid), MessagesDeleted(1)),
    ],
    ids=["mark_read", "delete_messages"],
)
def test_a_retried_mark_or_delete_returns_the_first_count(chat: Chat, make, first_value) -> None:
    alice = chat.user("alice")
    ids = (chat.send(alice, "alice").value.message_id,)
    assert chat.one(make(alice, ids, "r")).value == first_value
    assert chat.one(make(alice, ids, "r")).value == first_value  # the first reply
    assert chat.one(make(alice, ids, "other")).value == type(first_value)(0)


def test_a_retried_logout_finds_its_reply_by_the_ended_session(chat: Chat) -> None:
    chat.register("alice")
    token = chat.login("alice", "t1")
    assert chat.one(Logout(token, NOW, "r")) == Result()
    assert chat.one(Logout(token, NOW + 1, "r")) == Result()
    assert chat.state.session_result(token, "r", Logout.kind) == Result()
    assert unauthenticated(chat.one(Logout(token, NOW, "another")))
    later = chat.one(Logout(token, NOW + RESULT_TTL_MS, "r"))  # the reply has expired
    assert unauthenticated(later)


def test_a_retried_delete_account_returns_ok_and_spares_a_re_registered_name(
    chat: Chat,
) -> None:
    account_id = chat.register("alice")
    token = chat.login("alice", "t1")
    first = chat.one(DeleteAccount(token, account_id, NOW, "r"))
    assert first.ok
    new_id = chat.register("alice")
    assert chat.one(DeleteAccount(token, account_id, NOW, "r")) == first
    assert chat.state.account("alice") == Account(new_id, "alice", "hash-of-alice")


def test_one_request_id_on_two_kinds_names_two_requests(chat: Chat) -> None:
    chat.register("alice", request_id="same")
    token = chat.login("alice", "t1", request_id="same")  # not the CreateAccount reply
    sent = chat.send(token, "alice", request_id="same")
    read = chat.one(ReadMessages(token, 10, 1000, NOW, 0, "same"))
    assert [m.id for m in read.value.messages] == [sent.value.message_id]
    assert chat.table_rows("request_results") == 4


def test_old_entries_of_kinds_that_gained_a_request_id_still_decode() -> None:
    old = {
        b'{"op":"logout","token_hash":"t"}': Logout("t"),
        b'{"op":"mark_read","token_hash":"t","message_ids":[1]}': MarkRead("t", (1,)),
        b'{"op":"delete_messages","token_hash":"t","message_ids":[]}': DeleteMessages("t"),
        b'{"op":"delete_account","token_hash":"t","account_id":1,"now_ms":5}': DeleteAccount(
            "t", 1, 5
        ),
    }
    for payload, op in old.items():
        assert ops.decode(payload) == op
    new = DeleteAccount("t", 1, 5, "r")
    assert ops.decode(ops.encode(new)) == new


def test_an_old_logout_entry_ends_its_session_as_before(chat: Chat) -> None:
    """Entries from before Logout had a clock decode with now_ms 0: never expired."""
    chat.register("alice")
    token = chat.login("alice", "t1")
    assert chat.one(ops.decode(b'{"op":"logout","token_hash":"t1"}')) == Result()
    assert chat.state.session(token) is None


def test_a_reply_table_from_before_kinds_is_migrated(tmp_path: Path) -> None:
    """One reply answered any kind then: a success keeps the kind its fields name, an
    error answers all three kinds that stored replies, as before."""
    path = tmp_path / "old.db"
    login = Result(value=LoggedIn(sealed_token="s", seal_hash="", unread_count=0,
                                  last_message_id=0))  # fmt: skip
    sent = Result(value=Sent(message_id=7, recipient_online=False, sender="alice"))
    refused = Result("NOT_FOUND", "no user named 'ghost'")
    rows = [  # as the release of then stored them
        ("alice", "c", '{"code":"","message":"","value":{}}'),
        ("alice", "l", '{"code":"","message":"","value":{"sealed_token":"s","seal_hash":"",'
                       '"unread_count":0,"last_message_id":0}}'),
        ("alice", "s", '{"code":"","message":"","value":{"message_id":7,'
                       '"recipient_online":false,"sender":"alice"}}'),
        ("alice", "e", '{"code":"NOT_FOUND","message":"no user named \'ghost\'","value":{}}'),
    ]  # fmt: skip
    with closing(sqlite3.connect(path)) as old:
        old.execute(
            "CREATE TABLE request_results (username TEXT NOT NULL, request_id TEXT NOT NULL,"
            " created_ms INTEGER NOT NULL, result TEXT NOT NULL,"
            " PRIMARY KEY (username, request_id)) STRICT"
        )
        old.execute("CREATE INDEX request_results_by_age ON request_results (created_ms)")
        old.executemany(
            "INSERT INTO request_results VALUES (?, ?, ?, ?)",
            [(name, rid, NOW, stored) for name, rid, stored in rows],
        )
        old.commit()
    kinds = [CreateAccount.kind, Login.kind, SendMessage.kind]
    with ChatState(path) as state:
        found = {
            (rid, kind): state.stored_result("alice", rid, kind) for rid in "clse" for kind in kinds
        }
        assert {key for key, result in found.items() if result is not None} == {
            ("c", CreateAccount.kind),
            ("l", Login.kind),
            ("s", SendMessage.kind),
            *(("e", kind) for kind in kinds),
        }
        assert found["l", Login.kind] == login and found["s", SendMessage.kind] == sent
        assert found["e", SendMessage.kind] == refused
        state.apply([(1, CreateAccount("alice", "h", "c", NOW + 1))])  # a retry: the reply
        assert state.account("alice") is None


STORED_FORMS = [  # (kind, reply, its stored JSON, as every release so far wrote it)
    (CreateAccount.kind, Result(), '{"code":"","message":"","value":{}}'),
    (
        Login.kind,
        Result(value=LoggedIn(sealed_token="s", seal_hash="h", unread_count=2,
                              last_message_id=9)),
        '{"code":"","message":"","value":{"sealed_token":"s","seal_hash":"h",'
        '"unread_count":2,"last_message_id":9}}',
    ),
    (
        SendMessage.kind,
        Result(value=Sent(message_id=7, recipient_online=True, sender="alice", recipient_id=3,
                          sent_at_ms=NOW)),
        '{"code":"","message":"","value":{"message_id":7,"recipient_online":true,'
        f'"sender":"alice","recipient_id":3,"sent_at_ms":{NOW}}}}}',
    ),
    (
        ReadMessages.kind,
        Result(value=ReadIds(message_ids=(4, 5), remaining_unread=1)),
        '{"code":"","message":"","value":{"message_ids":[4,5],"remaining_unread":1}}',
    ),
    (MarkRead.kind, Result(value=Marked(marked_count=2)),
     '{"code":"","message":"","value":{"marked_count":2}}'),
    (DeleteMessages.kind, Result(value=MessagesDeleted(deleted_count=0)),
     '{"code":"","message":"","value":{"deleted_count":0}}'),
    (DeleteAccount.kind, Result(value=AccountDeleted(username="alice", account_id=3)),
     '{"code":"","message":"","value":{"username":"alice","account_id":3}}'),
    (SendMessage.kind, Result("NOT_FOUND", "no user named 'ghost'"),
     '{"code":"NOT_FOUND","message":"no user named \'ghost\'","value":{}}'),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "result", "stored"), STORED_FORMS)
def test_a_reply_is_stored_in_the_same_json_form_and_decodes_by_its_kind(
    kind: str, result: Result, stored: str
) -> None:
    """Replies outlive releases, and SQL reads fields of them (the kind migration)."""
    assert result.to_json() == stored
    assert Result.from_json(stored, kind) == result


@pytest.mark.parametrize(
    ("kind", "stored", "value"),
    [
        (
            Login.kind,
            '{"sealed_token":"s","unread_count":0,"last_message_id":0}',
            LoggedIn(sealed_token="s", seal_hash="", unread_count=0, last_message_id=0),
        ),
        (
            SendMessage.kind,
            '{"message_id":7,"recipient_online":false,"sender":"alice"}',
            Sent(message_id=7, recipient_online=False, sender="alice", recipient_id=0,
                 sent_at_ms=0),
        ),
        (
            DeleteAccount.kind,
            '{"username":"alice"}',
            AccountDeleted(username="alice", account_id=0),
        ),
    ],
    ids=["login before upgrades", "send before account ids", "delete before account ids"],
)  # fmt: skip
def test_replies_stored_before_a_field_was_added_still_decode(
    kind: str, stored: str, value: object
) -> None:
    text = '{"code":"","message":"","value":' + stored + "}"
    assert Result.from_json(text, kind) == Result(value=value)
