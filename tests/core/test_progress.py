"""Flow control as a table: a follower's progress and the log's bounds -> what to send it."""

from __future__ import annotations

import pytest

from coord.core.progress import NOTHING, Mode, Progress, Send, to_send

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
