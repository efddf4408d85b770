"""The leader's session cache: hits skip SQLite, and every op that changes a session
makes the next lookup read the row again."""

from __future__ import annotations

from chatnode import ops
from chatnode.session_cache import SessionCache
from chatnode.state import Session


class Rows:
    """A stand-in for the sessions table that counts lookups."""

    def __init__(self) -> None:
        self.rows = {"t1": Session(1, "alice", 100), "t2": Session(2, "bob", 100)}
        self.lookups = 0

    def __call__(self, token_hash: str) -> Session | None:
        self.lookups += 1
        return self.rows.get(token_hash)


def test_a_found_session_is_looked_up_once_and_a_missing_one_every_time() -> None:
    rows = Rows()
    cache = SessionCache(rows)
    assert cache.get("t1") == cache.get("t1") == Session(1, "alice", 100)
    assert rows.lookups == 1
    assert cache.get("nobody") is None and cache.get("nobody") is None
    assert rows.lookups == 3  # a token unknown now may be logged in a moment later


def test_ops_that_end_or_renew_a_session_make_it_read_again() -> None:
    rows = Rows()
    cache = SessionCache(rows)
    changes = [
        ops.Logout("t1", 5),
        ops.Touch("t1", 5, 200),
        ops.SendMessage("t1", "bob", "hi", "", 5, False, session_deadline_ms=200),
    ]
    for change in changes:
        cache.get("t1")
        rows.rows["t1"] = Session(1, "alice", rows.rows["t1"].expires_ms + 1)
        cache.applied(change)
        assert cache.get("t1") == rows.rows["t1"], change
    before = rows.lookups
    cache.applied(ops.SendMessage("t1", "bob", "hi", "", 5, False))  # no renewal in it
    cache.get("t1")
    assert rows.lookups == before


def test_deleting_an_account_forgets_every_session() -> None:
    rows = Rows()
    cache = SessionCache(rows)
    cache.get("t1"), cache.get("t2")
    del rows.rows["t1"], rows.rows["t2"]
    cache.applied(ops.DeleteAccount("t1", 1))
    assert cache.get("t1") is None and cache.get("t2") is None


def test_the_cache_is_bounded_least_recently_used_out_first() -> None:
    rows = Rows()
    rows.rows = {f"t{i}": Session(i, f"u{i}", 100) for i in range(3)}
    cache = SessionCache(rows, capacity=2)
    cache.get("t0"), cache.get("t1"), cache.get("t0"), cache.get("t2")  # t1 is the oldest
    before = rows.lookups
    cache.get("t0"), cache.get("t2")
    assert rows.lookups == before
    cache.get("t1")
    assert rows.lookups == before + 1
