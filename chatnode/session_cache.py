"""Sessions the leader has looked up, kept in memory.

Every session call starts by finding its token's session, which was one
SQLite lookup on the event loop per call (6 % of a loaded leader's time in
docs/performance.md). Sessions change only when an op that touches them
applies, and the applier tells this cache about each such op after the
batch that holds it is committed to state.db, on the event loop where all
lookups run; so a lookup either comes before the change and is forgotten
with it, or after it and reads the new row. Only sessions found are kept (a
token nobody has yet may be logged in a moment later), at most CAPACITY of
them, least recently used out first.

The cache must never be stale: a mutating call is judged again when its op
applies, but a read-only one (ListAccounts, Subscribe) is answered on the
cache's word alone. tests/api/test_api.py fails when an invalidation is missed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from chatnode import ops
from chatnode.state import Session

CAPACITY = 10_000


class SessionCache:
    def __init__(self, lookup: Callable[[str], Session | None], capacity: int = CAPACITY) -> None:
        self._lookup = lookup
        self._capacity = capacity
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def get(self, token_hash: str) -> Session | None:
        session = self._sessions.get(token_hash)
        if session is not None:
            self._sessions.move_to_end(token_hash)
            return session
        session = self._lookup(token_hash)
        if session is not None:
            self._sessions[token_hash] = session
            if len(self._sessions) > self._capacity:
                self._sessions.popitem(last=False)
        return session

    def applied(self, op: ops.Op) -> None:
        """op was applied: forget what it may have changed (ended, renewed, deleted)."""
        if isinstance(op, ops.DeleteAccount):
            self._sessions.clear()  # every session of the account ends; rare enough
        elif isinstance(op, ops.Logout) or getattr(op, "session_deadline_ms", 0):
            self._sessions.pop(op.token_hash, None)
        if isinstance(op, ops.EndSession):
            self._sessions.pop(op.ended_token_hash, None)

    def clear(self) -> None:
        """The state was replaced (a snapshot was installed)."""
        self._sessions.clear()
