"""Three replicas of the chat state fed one log by leaders whose wall clocks differ by hours.

Hypothesis drives a small cluster at the state machine's level: a log, three
ChatState replicas that apply it at their own pace (in batches, after reopening,
or by installing another replica's snapshot), and leaders that change and stamp
each op with the cluster clock exactly as the service does (chatnode.cluster_clock:
their wall clocks hours ahead or behind, their monotonic clocks true, a majority's
agreeing clocks taken for real time). Every node may stop at once for hours.
Accounts are deleted and their names registered again, and each replica feeds its
own LiveHub as the applier does, with Subscribe streams registered as the service
registers them: some in the same batch as the Logout or DeleteAccount that ends
their session. Real time is the test's own; no majority of clocks is ever wrong
together (the assumption rule 4 of the cluster clock states).

What must hold, whatever the schedule:

- **One state.** Every replica answers every entry the same way, and replicas that
  applied the same entries hold the same database (a digest of every table).
- **Exactly once.** A request retried within a day of real time (the stored-reply
  retention) is answered as the first time, never acted on again.
- **Nobody logged out early.** A session used within its TTL of real time, and not
  ended, still authenticates: expiry goes by the cluster clock alone. The one
  allowance: a use stamped while the cluster clock lagged real time (after every
  node stopped, until a leader whose clock a majority agrees with stamps) counts
  for that much less, since the clock catches up by that much at once.
- **Real time.** No stamp is ahead of real time, and a leader whose correct clock a
  majority agrees with stamps real time, also after every node stopped for hours.
- **Streams end with their session.** Once a replica applied the Logout or
  DeleteAccount that ended a stream's session, the stream has been told to close,
  and no stream ever got a message sent to another account (a name's next owner).

Planted bugs fail it (the last tests): leaders that stamp their own wall clock,
leaders that ignore their peers' clocks, replicas that prune stored replies by their
local clock, and streams registered only after the op that starts them applied.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from chatnode import ops
from chatnode.cluster_clock import ClusterClock
from chatnode.live import Closed, LiveHub, Subscriber
from chatnode.state import RESULT_TTL_MS, ChatState, StoredMessage
from coord.shell.clock_offsets import AGREE_MS
from proto.errors import ResourceExhausted

H = 3_600_000
TTL_MS = H  # the sessions' --session-ttl
STEP_MS = TTL_MS // 100  # RENEW_STEPS_PER_TTL: a renewal's slack, as the service gives it
REAL0 = 1_700_000_000_000
WALL_OFFSETS = [0, 2 * H, -2 * H, 25 * H, -25 * H]
DOWNTIMES = [1_000, 30 * 60_000, 2 * H, 25 * H]
REQUEST_IDS = ["r1", "r2", "r3"]
USERS = ["alice", "bob"]


@dataclass
class Proposed:
    """An entry and what the test knows of it: when it was proposed in real time."""

    index: int
    op: ops.Op
    real_ms: int
    by: int  # the node that stamped it


class Stamper:
    """What a leader stamps: the cluster clock over its own wall and monotonic clocks."""

    def __init__(self) -> None:
        self.clock = ClusterClock()

    def observe(self, cluster_ms: int, mono_ms: int) -> None:
        self.clock.observe(cluster_ms, mono_ms)

    def stamp(self, wall_ms: int, mono_ms: int, agreed: bool) -> int:
        return self.clock.stamp(wall_ms, mono_ms, lambda _wall, _mono: agreed)


class WallStamper(Stamper):
    """Planted bug: a leader that stamps its own wall clock."""

    def stamp(self, wall_ms: int, mono_ms: int, agreed: bool) -> int:
        return wall_ms


class LoneStamper(Stamper):
    """Planted bug: a leader that never takes its peers' agreeing clocks for real time."""

    def stamp(self, wall_ms: int, mono_ms: int, agreed: bool) -> int:
        return super().stamp(wall_ms, mono_ms, False)


class LocalPruneState(ChatState):
    """Planted bug: a replica that prunes stored replies by its own wall clock."""

    local_wall_ms = 0

    def apply(self, entries):  # type: ignore[no-untyped-def]
        cutoff = self.local_wall_ms - RESULT_TTL_MS
        self.connection.execute("DELETE FROM request_results WHERE created_ms <= ?", (cutoff,))
        return super().apply(entries)


@dataclass
class Stream:
    """A Subscribe stream the test opened on one node."""

    node: int
    subscriber: Subscriber
    token: str


class Replicas(RuleBasedStateMachine):
    stamper_type: type[Stamper] = Stamper
    state_type: type[ChatState] = ChatState
    register_before_touch = True  # as the service does; False is a planted bug

    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.TemporaryDirectory()
        root = Path(self.folder.name)
        self.paths = [root / f"n{i}.db" for i in range(3)]
        self.states = [self.state_type(path) for path in self.paths]
        self.stampers = [self.stamper_type() for _ in range(3)]
        self.walls = [0, 0, 0]  # each node's wall clock offset from real time
        self.monos = [5_000, 900_000_000, 77]  # each node's monotonic clock origin
        self.real = REAL0
        self.leader = 0
        self.log: list[Proposed] = []
        self.results: dict[int, ops.Result] = {}  # the first replica's answer, by index
        # Exactly once: (user, request_id, kind) -> (real time of the first answer, answer)
        self.first: dict[tuple[str, str, str], tuple[int, ops.Result]] = {}
        self.tokens: dict[str, str] = {}  # live token hash -> user
        # token hash -> real time of its last use, and how far the cluster clock lagged then
        self.used: dict[str, tuple[int, int]] = {}
        self.count = 0
        self.accounts: dict[str, int] = {}  # username -> id of its current account
        self.account_of: dict[str, int] = {}  # every token hash -> its account's id
        self.ended: dict[str, int] = {}  # token hash -> index of the entry that ended it
        self.sent_to: dict[int, int | None] = {}  # message id -> recipient's account id
        self.hubs = [LiveHub() for _ in range(3)]
        self.streams: list[Stream] = []

    def teardown(self) -> None:
        for state in self.states:
            state.close()
        self.folder.cleanup()

    # -- clocks -----------------------------------------------------------------------

    def mono(self, node: int) -> int:
        return self.real + self.monos[node]

    def wall(self, node: int) -> int:
        return self.real + self.walls[node]

    def agreed(self, node: int) -> bool:
        """Whether a majority's wall clocks, node's counted, read node's time."""
        agreeing = sum(abs(w - self.walls[node]) <= AGREE_MS for w in self.walls)
        return 2 * agreeing > len(self.walls)

    # -- the log ----------------------------------------------------------------------

    def propose(self, make: ops.Op) -> None:
        self.catch_up(self.leader)  # the read barrier: a leader stamps after applying all
        self.append(make)
        self.catch_up(self.leader)

    def stamp(self) -> int:
        """The leader's cluster time now, checked against real time."""
        leader = self.leader
        agreed = self.agreed(leader)
        now = self.stampers[leader].stamp(self.wall(leader), self.mono(leader), agreed)
        assert now <= self.real, f"stamped {now - self.real} ms ahead of real time"
        if agreed and self.walls[leader] == 0:
            assert now == self.real, f"a majority agrees, yet {self.real - now} ms behind"
        return now

    def append(self, make: ops.Op) -> None:
        """Stamp an op as the leader's service does and append it to the log."""
        leader = self.leader
        now = self.stamp()
        op = replace(make, now_ms=now)
        if isinstance(op, ops.Login):  # a new session: the service's deadline
            op = replace(op, session_deadline_ms=now + TTL_MS + STEP_MS)
        elif getattr(op, "session_deadline_ms", None) == -1:  # the service's renewal rule
            session = self.states[leader].session(op.token_hash)
            due = session is not None and session.expires_ms < now + TTL_MS
            op = replace(op, session_deadline_ms=now + TTL_MS + STEP_MS if due else 0)
        self.log.append(Proposed(len(self.log) + 1, op, self.real, leader))

    def catch_up(self, node: int) -> None:
        state = self.states[node]
        todo = [p for p in self.log if p.index > state.applied_index]
        if not todo:
            return
        if isinstance(state, LocalPruneState):
            state.local_wall_ms = self.wall(node)
        results = state.apply([(p.index, p.op) for p in todo])
        if todo[-1].by != node:  # as the applier: a node observed its own stamps already
            self.stampers[node].observe(state.clock_ms, self.mono(node))
        for proposed, result in zip(todo, results, strict=True):
            self.check(proposed, result)
            if result.ok:  # as the applier feeds the node's streams
                self.hubs[node].applied(proposed.index, proposed.op, result)
        self.check_streams(node)

    def check_streams(self, node: int) -> None:
        """What node's streams were told, against what node applied."""
        applied = self.states[node].applied_index
        for stream in self.streams:
            if stream.node != node:
                continue
            events = list(stream.subscriber._events)
            ended = self.ended.get(stream.token)
            if ended is not None and ended <= applied:
                assert any(isinstance(e, Closed) for e in events), "a stream outlived its session"
            for event in events:
                if isinstance(event, StoredMessage):
                    assert self.sent_to[event.id] == stream.subscriber.account_id, (
                        f"message {event.id} reached a stream of another account"
                    )

    def check(self, proposed: Proposed, result: ops.Result) -> None:
        """The properties, for one replica's answer to one entry."""
        seen = self.results.setdefault(proposed.index, result)
        assert result == seen, f"replicas answered entry {proposed.index} differently"
        if seen is not result:
            return  # judged when the first replica answered it
        op = proposed.op
        token = getattr(op, "token_hash", "")
        request_id = getattr(op, "request_id", "")
        account = self.account_of.get(token)
        if token in self.tokens and result.code == "UNAUTHENTICATED":
            last, lag = self.used[token]
            idle = proposed.real_ms - last
            assert idle >= TTL_MS - lag, f"{op.kind} logged out after {idle} ms idle (TTL {TTL_MS})"
        retried = (account, request_id, op.kind) in self.first
        if result.ok and token in self.tokens and not retried:
            # A use renews the session; a retry may be answered from its stored reply
            # after the session expired, so only a first request counts as a use here.
            self.used[token] = proposed.real_ms, proposed.real_ms - op.now_ms
        if result.ok:
            self.track(proposed, result)
        if request_id and account and result.code != "UNAUTHENTICATED":
            key = (account, request_id, op.kind)
            first = self.first.setdefault(key, (proposed.real_ms, result))
            if proposed.real_ms - first[0] < RESULT_TTL_MS:
                assert _same_answer(result, first[1]), f"{key} acted twice"

    def track(self, proposed: Proposed, result: ops.Result) -> None:
        """Accounts, sessions and messages, as the log's answers define them."""
        op, index = proposed.op, proposed.index
        match op:
            case ops.CreateAccount():  # created with no request_id: never a retry
                self.accounts[op.username] = index
            case ops.Login() if op.token_hash not in self.used:
                self.tokens[op.token_hash] = op.username
                self.used[op.token_hash] = proposed.real_ms, proposed.real_ms - op.now_ms
                self.account_of[op.token_hash] = op.account_id
            case ops.Logout():
                self.tokens.pop(op.token_hash, None)
                self.ended.setdefault(op.token_hash, index)
            case ops.EndSession():
                self.tokens.pop(op.ended_token_hash, None)
                self.ended.setdefault(op.ended_token_hash, index)
            case ops.DeleteAccount():  # or a retry of it, after the name was taken again
                gone = result.value.account_id
                if self.accounts.get(result.value.username) == gone:
                    del self.accounts[result.value.username]
                for token in [t for t, a in self.account_of.items() if a == gone]:
                    self.tokens.pop(token, None)
                    self.ended.setdefault(token, index)
            case ops.SendMessage() if result.value.message_id == index:
                self.sent_to[index] = self.accounts.get(op.recipient)

    # -- rules ------------------------------------------------------------------------

    @initialize()
    def users(self) -> None:
        for user in USERS:
            self.propose(ops.CreateAccount(user, "h", "", 0))
            self.login(user)

    def login(self, user: str) -> None:
        self.count += 1
        account = self.states[self.leader].account(user)
        account_id = account.id if account else 0
        token = f"{user}-{self.count}"
        self.propose(ops.Login(user, account_id, token, "", "", 0, "", 0))

    def token(self, user: str) -> str | None:
        return next((t for t, u in reversed(self.tokens.items()) if u == user), None)

    def ending(self, token: str, how: str, rid: str) -> ops.Op:
        if how == "logout":
            return ops.Logout(token, 0, rid)
        if how == "end":  # the user's oldest session: another device's, or this one
            user = self.tokens[token]
            oldest = next(t for t, u in self.tokens.items() if u == user)
            return ops.EndSession(token, oldest, 0, rid, -1)
        return ops.DeleteAccount(token, self.account_of[token], 0, rid)

    @rule(ms=st.sampled_from([1, 1000, 30 * 60_000, TTL_MS - 1, 23 * H, RESULT_TTL_MS + 1]))
    def real_time_passes(self, ms: int) -> None:
        self.real += ms

    @rule(node=st.integers(0, 2), wall=st.sampled_from(WALL_OFFSETS))
    def leader_changes(self, node: int, wall: int) -> None:
        for other, offset in enumerate(self.walls):
            if offset == wall != 0:
                self.walls[other] = 0  # a majority is never wrong together
        self.walls[node] = wall
        self.hubs[self.leader].close_all("leadership moved")
        self.leader = node

    @rule(downtime=st.sampled_from(DOWNTIMES))
    def every_node_restarts(self, downtime: int) -> None:
        """All stop, for a while; every machine boots again (new monotonic clocks)."""
        self.real += downtime
        self.streams.clear()
        for node in range(3):
            self.replica_reopens(node)
            self.monos[node] = 1_000 * (node + 1) - self.real
            self.stampers[node] = self.stamper_type()
            if self.states[node].clock_ms:  # as the applier does at start
                self.stampers[node].observe(self.states[node].clock_ms, self.mono(node))

    @rule(
        user=st.sampled_from(USERS),
        kind=st.sampled_from(["send", "read", "touch", "logout", "login", "delete", "end"]),
        rid=st.sampled_from(REQUEST_IDS),
    )
    def call(self, user: str, kind: str, rid: str) -> None:
        token = self.token(user)
        if kind == "login" or token is None:
            if user not in self.accounts:
                self.propose(ops.CreateAccount(user, "h", "", 0))  # the name, taken again
            self.login(user)
            return
        other = USERS[1 - USERS.index(user)]
        made = {
            "send": ops.SendMessage(token, other, f"{user}:{rid}", rid, 0, False, -1),
            "read": ops.ReadMessages(token, 10, 1 << 20, 0, -1, rid),
            "touch": ops.Touch(token, 0, -1),
            "logout": self.ending(token, "logout", rid),
            "delete": self.ending(token, "delete", rid),
            "end": self.ending(token, "end", rid),
        }[kind]
        self.propose(made)

    @rule(user=st.sampled_from(USERS), how=st.sampled_from(["", "logout", "delete", "end"]))
    def subscribe(self, user: str, how: str) -> None:
        """A Subscribe stream, as the service opens it: authenticated by the applied state,
        registered, then its Touch proposed; with ``how``, a Logout or DeleteAccount of
        its session commits in the Touch's batch."""
        token, leader = self.token(user), self.leader
        self.catch_up(leader)
        session = self.states[leader].session(token) if token else None
        if token is None or session is None or session.expired(self.stamp()):
            return
        if self.register_before_touch:
            self.register(leader, session.account_id, user, token)
        self.append(ops.Touch(token, 0, -1))
        if how:
            self.append(self.ending(token, how, f"end-{self.count}"))
        self.catch_up(leader)
        if not self.register_before_touch:
            self.register(leader, session.account_id, user, token)
            self.check_streams(leader)

    def register(self, node: int, account_id: int, user: str, token: str) -> None:
        with contextlib.suppress(ResourceExhausted):  # the user's streams are all open
            subscriber = self.hubs[node].subscribe(account_id, user, token)
            self.streams.append(Stream(node, subscriber, token))

    @rule(node=st.integers(0, 2))
    def replica_applies(self, node: int) -> None:
        self.catch_up(node)

    @rule(node=st.integers(0, 2))
    def replica_reopens(self, node: int) -> None:
        self.states[node].close()
        self.states[node] = self.state_type(self.paths[node])
        self.hubs[node] = LiveHub()
        self.streams = [s for s in self.streams if s.node != node]

    @rule(src=st.integers(0, 2), dst=st.integers(0, 2))
    def snapshot_installed(self, src: int, dst: int) -> None:
        """dst falls behind the compacted log and installs a copy of src's state."""
        source, target = self.states[src], self.states[dst]
        if src == dst or source.applied_index <= target.applied_index:
            return
        copy = Path(self.folder.name) / "snapshot.db"
        copy.unlink(missing_ok=True)
        source.copy_to(copy)
        target.restore_from(copy)
        self.hubs[dst].close_all("this node's state was replaced by a snapshot")  # as the applier
        self.stampers[dst].observe(target.clock_ms, self.mono(dst))

    def teardown_check(self) -> None:
        for node in range(3):
            self.catch_up(node)
            self.check_streams(node)
        digests = {_digest(path) for path in self.paths}
        assert len(digests) == 1, "replicas that applied the same log differ"


def _same_answer(result: ops.Result, first: ops.Result) -> bool:
    """A retry's answer is the first one; a read's names the first batch by its ids."""
    return _batch(result) == _batch(first)


def _batch(result: ops.Result) -> object:
    match result.value:
        case ops.MessagesRead(messages, remaining):
            return tuple(m.id for m in messages), remaining
        case ops.ReadAgain(_, ops.ReadIds(ids, remaining)):
            return ids, remaining
    return result


def _digest(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = [(t, sorted(conn.execute(f"SELECT * FROM {t}").fetchall())) for t in sorted(tables)]
    return hashlib.sha256(repr(rows).encode()).hexdigest()


SETTINGS = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class Checked(Replicas):
    def teardown(self) -> None:
        try:
            self.teardown_check()
        finally:
            super().teardown()


def test_replicas_agree_act_once_and_log_nobody_out_early() -> None:
    run_state_machine_as_test(Checked, settings=SETTINGS)


class WallClockLeaders(Checked):
    stamper_type = WallStamper


class LocalPruning(Checked):
    state_type = LocalPruneState


class LoneLeaders(Checked):
    stamper_type = LoneStamper


class LateRegistration(Checked):
    register_before_touch = False


@pytest.mark.parametrize(
    "planted",
    [WallClockLeaders, LocalPruning, LoneLeaders, LateRegistration],
    ids=lambda c: c.__name__,
)
def test_a_planted_bug_fails_it(planted: type[Replicas]) -> None:
    """Found within the examples of a fixed seed; not shrunk (that is for real failures)."""
    found = settings(
        SETTINGS,
        max_examples=200,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
    )
    with pytest.raises((AssertionError, Flaky)):
        run_state_machine_as_test(planted, settings=found)
