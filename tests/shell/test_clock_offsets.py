"""The leader's estimate of each follower's wall-clock offset, from heartbeat round trips."""

from __future__ import annotations

import logging

import pytest

from coord.shell.clock_offsets import (
    AGREE_MS,
    FRESH_MS,
    SAMPLES,
    ClockOffsets,
    Sample,
    estimate,
)

H = 3_600_000
T0 = 1_700_000_000_000


def sample(offset_ms: int, rtt_ms: int, mono_ms: int = 0, wall_ms: int = T0) -> Sample:
    return Sample(offset_ms, rtt_ms, mono_ms, wall_ms)


@pytest.mark.parametrize(
    ("follower_wall", "echo", "now_mono", "now_wall", "expected"),
    [
        (1_000_050, 100, 200, 1_000_100, (0, 100)),  # in step: read at the middle
        (1_000_050 + 2 * H, 100, 200, 1_000_100, (2 * H, 100)),  # 2 h ahead
        (1_000_050 - 25 * H, 100, 200, 1_000_100, (-25 * H, 100)),  # 25 h behind
        (1_000_100, 200, 200, 1_000_100, (0, 0)),  # no measurable round trip
        (1_000_100, 300, 200, 1_000_100, (0, 0)),  # an echo from the future: rtt 0
    ],
)
def test_one_sample_takes_the_followers_reading_at_the_round_trips_middle(
    follower_wall: int, echo: int, now_mono: int, now_wall: int, expected: tuple[int, int]
) -> None:
    """expected: (offset, round trip); the sample keeps the leader's clocks at its taking."""
    offset, rtt = expected
    sample = Sample(offset, rtt, now_mono, now_wall)
    assert estimate(follower_wall, echo, now_mono, now_wall) == sample


def test_the_shortest_recent_round_trip_wins_and_old_samples_age_out() -> None:
    offsets = ClockOffsets()
    assert offsets.offset_ms(2) is None
    offsets.offer(2, sample(40, 80))  # a slow round trip: up to 40 ms off
    offsets.offer(2, sample(3, 2))
    offsets.offer(2, sample(25, 50))
    assert offsets.offset_ms(2) == 3
    for _ in range(SAMPLES):
        offsets.offer(2, sample(10, 20))
    assert offsets.offset_ms(2) == 10
    offsets.forget({3})
    assert offsets.offset_ms(2) is None


def test_an_offset_over_a_second_is_logged_once_and_again_after_it_recovered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    offsets = ClockOffsets()
    with caplog.at_level(logging.WARNING):
        offsets.offer(3, sample(2 * H, 1))
        offsets.offer(3, sample(2 * H, 1))
        assert len(caplog.records) == 1 and "+7200.000 s" in caplog.text
        for _ in range(SAMPLES):
            offsets.offer(3, sample(5, 1))
        offsets.offer(3, sample(-1500, 0))
    assert len(caplog.records) == 2 and "-1.500 s" in caplog.records[1].getMessage()


@pytest.mark.parametrize(
    ("samples", "wall_ms", "mono_ms", "agrees"),
    [
        ([sample(300, 20)], T0, 0, True),  # 300 ms apart, give or take 10 ms
        ([sample(-AGREE_MS, 0)], T0, 0, True),  # at the edge
        ([sample(AGREE_MS - 10, 22)], T0, 0, False),  # within it, but not beyond doubt
        ([sample(2 * H, 4)], T0, 0, False),  # hours apart
        ([sample(0, 4)], T0 + FRESH_MS, FRESH_MS, True),  # the sample is as old as may be
        ([sample(0, 4)], T0 + FRESH_MS + 1, FRESH_MS + 1, False),  # stale
        ([sample(0, 4)], T0 + 2 * H + 500, 500, False),  # our clock stepped 2 h since
        ([sample(2 * H, 4)], T0 + 2 * H + 500, 500, True),  # ...to where the peer's reads
        ([sample(5, 900), sample(2 * H, 2)], T0, 0, False),  # the sharper sample decides
        ([], T0, 0, False),  # never heard
    ],
)
def test_a_peer_agrees_when_a_fresh_sample_puts_its_clock_within_a_second_of_ours(
    samples: list[Sample], wall_ms: int, mono_ms: int, agrees: bool
) -> None:
    offsets = ClockOffsets()
    for one in samples:
        offsets.offer(2, one)
    assert offsets.agrees(2, wall_ms, mono_ms) is agrees


def test_a_reply_delayed_by_seconds_is_no_reason_to_warn(caplog: pytest.LogCaptureFixture) -> None:
    """A peer busy installing a snapshot answered 10 s late: its offset could be anything
    within 5 s, so only an offset beyond the round trip's doubt is logged."""
    offsets = ClockOffsets()
    with caplog.at_level(logging.WARNING):
        offsets.offer(2, sample(5_156, 10_319))
        assert not caplog.records
        offsets.offer(2, sample(5_156, 4_000))  # at least 3.156 s off whatever the delay
    assert len(caplog.records) == 1 and "+5.156 s" in caplog.text
