"""The fault-run checker: a clean history passes, and every kind of violation is caught.

Each violation kind has a history built to show it, so every check is seen to
fail; a hypothesis property shows that histories of a correct (sequential)
server always pass and that losing or duplicating any acknowledged message is
always caught.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.netns.checker import (
    History,
    Op,
    Outcome,
    Readback,
    ReplicaDump,
    StatusSample,
    Stored,
    check,
    info_present,
    readback_from_dict,
    readback_to_dict,
)

SENDER = "w0"


def op(
    body: str,
    outcome: Outcome = "ok",
    message_id: int = 0,
    *,
    at: float = 0.0,
    took: float = 0.5,
    recipient: str = "r",
    client: int = 0,
) -> Op:
    error = {"ok": "", "info": "UNAVAILABLE: no leader", "fail": "NOT_FOUND: no such user"}
    return Op(client, body, recipient, at, at + took, outcome, message_id, error[outcome])


def stored(*rows: tuple[int, str]) -> list[Stored]:
    return [Stored(message_id, SENDER, body) for message_id, body in rows]


Replicas = dict[int, ReplicaDump]


def clean() -> tuple[list[Op], list[StatusSample], Readback, Replicas]:
    """Three sequential acks, an info that was applied, an info that was not, a fail."""
    ops = [
        op("a", "ok", 10, at=0.0),
        op("b", "ok", 12, at=1.0),
        op("c", "info", at=2.0),
        op("d", "info", at=3.0),
        op("e", "fail", at=4.0),
        op("f", "ok", 20, at=5.0, recipient="s"),
    ]
    samples = [
        StatusSample(0.0, 1, "leader", 1),
        StatusSample(0.0, 2, "follower", 1),
        StatusSample(2.5, 2, "leader", 2),
        StatusSample(2.6, 1, "follower", 2),
    ]
    readback = {"r": stored((10, "a"), (12, "b"), (15, "c")), "s": stored((20, "f"))}
    dump = {"messages": [(10, "a"), (12, "b"), (15, "c"), (20, "f")], "accounts": [(1, "r")]}
    return ops, samples, readback, {1: dump, 2: dict(dump), 3: dict(dump)}


def kinds(
    ops: list[Op], samples: list[StatusSample], readback: Readback, replicas: Replicas
) -> list[str]:
    """The kinds of violation check finds, each once, sorted."""
    return sorted({v.kind for v in check(ops, samples, readback, replicas).violations})


# -- a clean history ------------------------------------------------------------------------


def test_a_clean_history_passes_with_its_counts() -> None:
    verdict = check(*clean())
    assert verdict.ok, verdict.summary()
    assert verdict.violations == ()
    c = verdict.counts
    assert (c.ok, c.info, c.fail, c.present, c.info_present) == (3, 2, 1, 4, 1)
    assert verdict.summary().startswith("valid: 6 ops (3 ok, 2 info of which 1 present, 1 fail)")


def test_info_present_names_the_indeterminate_ops_that_were_applied() -> None:
    ops, _, readback, _ = clean()
    assert [o.body for o in info_present(ops, readback)] == ["c"]


# -- every kind can fail ----------------------------------------------------------------------


def test_an_acknowledged_message_missing_is_lost() -> None:
    ops, samples, readback, replicas = clean()
    readback = {**readback, "r": stored((10, "a"), (15, "c"))}
    verdict = check(ops, samples, readback, replicas)
    assert [str(v) for v in verdict.violations] == ["lost: 'b' acknowledged as id 12, absent"]
    assert "INVALID" in verdict.summary() and "1 lost" in verdict.summary()


def test_a_body_stored_twice_is_a_duplicate_even_under_two_recipients() -> None:
    ops, samples, readback, replicas = clean()
    twice = {**readback, "r": stored((10, "a"), (12, "b"), (13, "b"), (15, "c"))}
    assert kinds(ops, samples, twice, replicas) == ["duplicate"]
    elsewhere = {**readback, "s": stored((11, "a"), (20, "f"))}
    assert "duplicate" in kinds(ops, samples, elsewhere, replicas)


def test_one_id_holding_two_messages_is_a_duplicate() -> None:
    ops, samples, readback, replicas = clean()
    ops.append(op("g", "info", at=0.0, recipient="s"))
    shared = {**readback, "s": stored((15, "g"), (20, "f"))}
    verdict = check(ops, samples, shared, replicas)
    assert [v.kind for v in verdict.violations] == ["duplicate"]
    assert "id 15 holds 2 messages" in verdict.violations[0].detail


def test_a_message_no_op_sent_is_a_phantom() -> None:
    ops, samples, readback, replicas = clean()
    readback = {**readback, "s": stored((20, "f"), (21, "zzz"))}
    assert kinds(ops, samples, readback, replicas) == ["phantom"]


def test_a_definite_failure_that_is_stored_is_caught() -> None:
    ops, samples, readback, replicas = clean()
    readback = {**readback, "r": [*readback["r"], Stored(16, SENDER, "e")]}
    assert kinds(ops, samples, readback, replicas) == ["failed-but-present"]


def test_a_message_stored_under_another_id_than_acknowledged_is_caught() -> None:
    ops, samples, readback, replicas = clean()
    readback = {**readback, "r": stored((10, "a"), (13, "b"), (15, "c"))}
    assert kinds(ops, samples, readback, replicas) == ["wrong-id"]


def test_a_message_stored_for_another_recipient_is_caught() -> None:
    ops, samples, readback, replicas = clean()
    readback = {"r": stored((10, "a"), (12, "b"), (15, "c"), (20, "f"))}
    assert kinds(ops, samples, readback, replicas) == ["wrong-recipient"]


def test_an_inbox_out_of_id_order_is_caught() -> None:
    ops, samples, readback, replicas = clean()
    readback = {**readback, "r": [readback["r"][1], readback["r"][0], readback["r"][2]]}
    verdict = check(ops, samples, readback, replicas)
    assert [v.kind for v in verdict.violations] == ["order"]
    assert "id 10 ('a') after id 12 ('b')" in verdict.violations[0].detail


def test_a_later_op_with_a_lower_id_breaks_real_time_order() -> None:
    """b was invoked after a's ack, yet got the lower id: also across recipients."""
    ops = [op("a", "ok", 12, at=0.0), op("b", "ok", 10, at=1.0, recipient="s")]
    readback = {"r": stored((12, "a")), "s": stored((10, "b"))}
    verdict = check(ops, [], readback, {})
    assert [v.kind for v in verdict.violations] == ["order"]
    assert "'b' (id 10) was invoked at 1.000, after 'a' (id 12)" in verdict.violations[0].detail


def test_an_applied_info_op_counts_for_real_time_order_too() -> None:
    ops = [op("a", "ok", 12, at=0.0), op("b", "info", at=1.0)]
    assert kinds(ops, [], {"r": stored((11, "b"), (12, "a"))}, {}) == ["order"]


def test_concurrent_ops_may_take_ids_in_either_order() -> None:
    ops = [op("a", "ok", 12, at=0.0, took=2.0), op("b", "ok", 10, at=1.0)]
    assert check(ops, [], {"r": stored((10, "b"), (12, "a"))}, {}).ok


def test_replicas_that_differ_are_divergent_naming_the_nodes_and_first_row() -> None:
    ops, samples, readback, replicas = clean()
    replicas[3] = {**replicas[3], "messages": [(10, "a"), (12, "X"), (15, "c"), (20, "f")]}
    verdict = check(ops, samples, readback, replicas)
    assert [str(v) for v in verdict.violations] == [
        "divergent: nodes 1 and 3 differ in messages (4 vs 4 rows) at row 1: "
        "node 1 has (12, 'b'), node 3 has (12, 'X')"
    ]


def test_a_replica_missing_rows_or_a_table_is_divergent() -> None:
    ops, samples, readback, replicas = clean()
    replicas[2] = {**replicas[2], "messages": [(10, "a"), (12, "b")]}
    replicas[3] = {"messages": replicas[1]["messages"]}
    details = [v.detail for v in check(ops, samples, readback, replicas).violations]
    assert details == [
        "nodes 1 and 2 differ in messages (4 vs 2 rows) at row 2: "
        "node 1 has (15, 'c'), node 2 has no row",
        "node 1 has table accounts, node 3 has not",
    ]


def test_two_nodes_leading_one_term_is_caught() -> None:
    ops, samples, readback, replicas = clean()
    samples.append(StatusSample(3.0, 1, "leader", 2))
    verdict = check(ops, samples, readback, replicas)
    assert [str(v) for v in verdict.violations] == [
        "two-leaders: term 2 was led by node 1 at 3.000, node 2 at 2.500"
    ]


def test_every_violation_is_reported_not_only_the_first() -> None:
    ops, samples, readback, replicas = clean()
    readback = {"r": stored((10, "a"), (16, "e"), (17, "zzz"))}
    found = kinds(ops, samples, readback, replicas)
    assert found == ["failed-but-present", "lost", "phantom"]


def test_the_summary_lists_a_limited_number_of_lines() -> None:
    ops = [op(f"m{i}", "ok", i + 1, at=float(i)) for i in range(30)]
    summary = check(ops, [], {}, {}).summary(limit=5)
    assert summary.splitlines()[0].endswith("30 violations: 30 lost")
    assert len(summary.splitlines()) == 7 and summary.endswith("... and 25 more")


# -- the data model -------------------------------------------------------------------------


def test_history_and_readback_survive_json() -> None:
    ops, samples, readback, _ = clean()
    history = History(tuple(ops), tuple(samples))
    assert History.from_dict(json.loads(json.dumps(history.to_dict()))) == history
    assert readback_from_dict(json.loads(json.dumps(readback_to_dict(readback)))) == readback


def test_an_op_has_an_id_exactly_when_it_was_acknowledged() -> None:
    with pytest.raises(ValueError, match="an id goes with outcome 'ok'"):
        Op(0, "x", "r", 0.0, 1.0, "ok")
    with pytest.raises(ValueError, match="an id goes with outcome 'ok'"):
        Op(0, "x", "r", 0.0, 1.0, "info", 5)
    with pytest.raises(ValueError, match="outcome must be one of"):
        Op(0, "x", "r", 0.0, 1.0, "maybe")  # type: ignore[arg-type]


def test_ops_sharing_a_body_are_refused() -> None:
    with pytest.raises(ValueError, match="share the body"):
        check([op("a", "info"), op("a", "info")], [], {}, {})


# -- property: a correct server always passes, a lost or doubled ack is always caught -------


@dataclass(frozen=True)
class Planned:
    """One op of the model: when it starts, when it applies (if it does), how the ack ends."""

    client: int
    start: float
    apply_after: float
    ack_after: float
    applied: bool
    acked: bool  # for an applied op: whether the ack reached the client
    recipient: str


planned = st.builds(
    Planned,
    client=st.integers(0, 3),
    start=st.floats(0, 10, allow_nan=False),
    apply_after=st.floats(0.001, 1, allow_nan=False),
    ack_after=st.floats(0.001, 1, allow_nan=False),
    applied=st.booleans(),
    acked=st.booleans(),
    recipient=st.sampled_from(["r", "s", "t"]),
)


def sequential_run(plan: list[Planned], gaps: list[int]) -> tuple[list[Op], Readback, Replicas]:
    """What a correct server does: applies ops one at a time in apply-time order, each id
    above the last (gaps: other log entries between), and loses some acks (info)."""
    applied = sorted(
        (i for i, p in enumerate(plan) if p.applied),
        key=lambda i: plan[i].start + plan[i].apply_after,
    )
    ids: dict[int, int] = {}
    last = 0
    for n, i in enumerate(applied):
        last += 1 + gaps[n % len(gaps)]
        ids[i] = last
    ops: list[Op] = []
    for i, p in enumerate(plan):
        applied_at = p.start + p.apply_after
        if i in ids and p.acked:
            ops.append(
                Op(p.client, f"m{i}", p.recipient, p.start, applied_at + p.ack_after, "ok", ids[i])
            )
        else:
            outcome = "info" if i in ids or p.acked else "fail"
            ops.append(
                Op(
                    p.client,
                    f"m{i}",
                    p.recipient,
                    p.start,
                    applied_at + p.ack_after,
                    outcome,
                    0,
                    "x",
                )
            )
    readback: dict[str, list[Stored]] = {r: [] for r in ("r", "s", "t")}
    for i in applied:
        readback[plan[i].recipient].append(Stored(ids[i], SENDER, f"m{i}"))
    dump = {"messages": [(ids[i], SENDER, f"m{i}") for i in applied]}
    return ops, readback, {1: dump, 2: dump, 3: dump}


@settings(max_examples=200, deadline=None)
@given(st.lists(planned, min_size=1, max_size=40), st.lists(st.integers(0, 3), min_size=1))
def test_any_history_of_a_sequential_server_passes(plan: list[Planned], gaps: list[int]) -> None:
    ops, readback, replicas = sequential_run(plan, gaps)
    samples = [StatusSample(float(t), 1 + t % 3, "leader", t) for t in range(5)]
    verdict = check(ops, samples, readback, replicas)
    assert verdict.ok, verdict.summary()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(planned, min_size=1, max_size=40),
    st.lists(st.integers(0, 3), min_size=1),
    st.integers(0),
    st.booleans(),
)
def test_dropping_or_doubling_any_acknowledged_message_is_caught(
    plan: list[Planned], gaps: list[int], pick: int, drop: bool
) -> None:
    ops, readback, replicas = sequential_run(plan, gaps)
    acked = [o for o in ops if o.outcome == "ok"]
    if not acked:
        return  # nothing acknowledged, nothing to tamper with
    victim = acked[pick % len(acked)]
    inbox = list(readback[victim.recipient])
    row = next(m for m in inbox if m.body == victim.body)
    tampered = [m for m in inbox if m != row] if drop else [*inbox, row]
    verdict = check(ops, [], {**readback, victim.recipient: tampered}, replicas)
    expected = "lost" if drop else "duplicate"
    assert expected in verdict.by_kind(), verdict.summary()
