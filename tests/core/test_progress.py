"""Flow control as a table: a follower's progress and the log's bounds -> what to send it."""

from __future__ import annotations

import pytest

from coord.core.progress import Mode, Progress, Send, to_send

NOTHING = Send()  # nothing to send this follower now

MAX_INFLIGHT = 2


def progress(
    mode: Mode, next_index: int, *, probe_sent: bool = False, inflight: int = 0
) -> Progress:
    p = Progress(next_index, 0)
    p.mode, p.probe_sent = mode, probe_sent
    p.inflight.extend(range(next_index - inflight, next_index))
    return p


ENTRIES_FROM_5 = Send(append=True, entries_from=5)
HEARTBEAT = Send(append=True)
SNAPSHOT = Send(snapshot=True)


@pytest.mark.parametrize(
    ("follower", "first", "last", "heartbeat", "expected"),
    [
        (progress(Mode.PROBE, 5), 1, 7, False, ENTRIES_FROM_5),  # a probe goes out
        (progress(Mode.PROBE, 5), 1, 7, True, ENTRIES_FROM_5),  # a heartbeat carries it
        (progress(Mode.PROBE, 5, probe_sent=True), 1, 7, False, NOTHING),  # one probe at a time
        (progress(Mode.PROBE, 5, probe_sent=True), 1, 7, True, HEARTBEAT),
        (progress(Mode.REPLICATE, 5, inflight=1), 1, 7, False, ENTRIES_FROM_5),  # pipelined
        (progress(Mode.REPLICATE, 5, inflight=2), 1, 7, False, NOTHING),  # window full
        (progress(Mode.REPLICATE, 5, inflight=2), 1, 7, True, HEARTBEAT),
        (progress(Mode.REPLICATE, 8), 1, 7, False, NOTHING),  # holds everything
        (progress(Mode.REPLICATE, 8), 1, 7, True, HEARTBEAT),
        (progress(Mode.PROBE, 3), 5, 7, False, SNAPSHOT),  # what it lacks is compacted
        (progress(Mode.PROBE, 3), 5, 7, True, Send(append=True, snapshot=True)),
        (progress(Mode.PROBE, 5), 5, 7, False, ENTRIES_FROM_5),  # the first entry still held
        (progress(Mode.SNAPSHOT, 3), 5, 7, False, NOTHING),  # waits for the snapshot
        (progress(Mode.SNAPSHOT, 3), 5, 7, True, HEARTBEAT),
    ],
)
def test_to_send(
    follower: Progress, first: int, last: int, heartbeat: bool, expected: Send
) -> None:
    assert to_send(follower, first, last, MAX_INFLIGHT, heartbeat=heartbeat) == expected


@pytest.mark.parametrize(
    ("mode", "match", "snapshot_index", "expected_mode", "expected_next"),
    [
        (Mode.PROBE, 6, 0, Mode.REPLICATE, 7),  # a probe answered: pipeline from here
        (Mode.SNAPSHOT, 6, 5, Mode.PROBE, 7),  # holds our snapshot: installed, probe after it
        (Mode.SNAPSHOT, 4, 5, Mode.SNAPSHOT, 5),  # not yet: keep waiting for the snapshot
    ],
)
def test_an_ack_moves_the_mode(
    mode: Mode, match: int, snapshot_index: int, expected_mode: Mode, expected_next: int
) -> None:
    follower = progress(mode, 5)
    assert follower.update(match, snapshot_index, now_ms=10)
    assert (follower.mode, follower.match, follower.next) == (expected_mode, match, expected_next)


@pytest.mark.parametrize(
    ("mode", "since", "expected"),
    [
        (Mode.SNAPSHOT, 100, True),  # a lease without the install: order again
        (Mode.SNAPSHOT, 99, False),  # the order may still be streaming
        (Mode.REPLICATE, 100, False),  # no snapshot needed
    ],
)
def test_snapshot_overdue(mode: Mode, since: int, expected: bool) -> None:
    follower = progress(Mode.PROBE, 3)
    follower.need_snapshot(now_ms=0)
    follower.mode = mode
    assert follower.snapshot_overdue(since, lease_ms=100) is expected


def answered(follower: Progress, echo_sent_at_ms: int, match: int, now_ms: int) -> None:
    """A successful reply, handled as the node handles one."""
    follower.acked(echo_sent_at_ms, 0, now_ms)
    follower.update(match, 0, now_ms)
    follower.caught_up(echo_sent_at_ms)


def test_a_follower_holding_the_whole_log_lags_by_nothing() -> None:
    follower = Progress(1, 0)
    follower.append_sent(100, reaches=5, last_index=5)
    answered(follower, 100, match=5, now_ms=110)
    assert follower.lag_ms(now_ms=5000, last_index=5) == 0


def test_lag_in_time_counts_from_the_newest_send_whose_whole_log_was_acked() -> None:
    follower = Progress(1, 0)
    follower.append_sent(100, reaches=5, last_index=5)
    follower.append_sent(200, reaches=7, last_index=7)
    follower.append_sent(300, reaches=9, last_index=9)
    answered(follower, 100, match=5, now_ms=150)
    assert follower.lag_ms(now_ms=400, last_index=9) == 300  # it held our log as of 100
    # Pipelined: the answer to the send at 300 holds only what we had at 200.
    answered(follower, 300, match=7, now_ms=350)
    assert follower.lag_ms(now_ms=400, last_index=9) == 200
    answered(follower, 300, match=9, now_ms=360)
    assert follower.lag_ms(now_ms=400, last_index=9) == 0


def test_a_silent_follower_lags_from_when_its_bookkeeping_began() -> None:
    follower = Progress(1, 1000)
    for sent_at in range(1000, 3000, 100):
        follower.append_sent(sent_at, reaches=0, last_index=sent_at // 100)
    assert follower.lag_ms(now_ms=3000, last_index=30) == 2000


def test_heartbeats_over_an_unchanged_log_keep_one_mark() -> None:
    follower = Progress(1, 0)
    follower.append_sent(100, reaches=4, last_index=5)
    follower.append_sent(200, reaches=4, last_index=5)  # a heartbeat: nothing new to mark
    answered(follower, 200, match=5, now_ms=250)
    assert follower.caught_up_ms == 100
    follower.append_sent(300, reaches=5, last_index=6)
    assert follower.lag_ms(now_ms=400, last_index=6) == 300
