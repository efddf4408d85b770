"""The leader's estimate of each follower's wall-clock offset, from heartbeat round trips."""

from __future__ import annotations

import logging

import pytest

from coord.shell.clock_offsets import SAMPLES, ClockOffsets, Sample, estimate

H = 3_600_000


@pytest.mark.parametrize(
    ("follower_wall", "echo", "now_mono", "now_wall", "expected"),
    [
        (1_000_050, 100, 200, 1_000_100, Sample(0, 100)),  # in step: read at the middle
        (1_000_050 + 2 * H, 100, 200, 1_000_100, Sample(2 * H, 100)),  # 2 h ahead
        (1_000_050 - 25 * H, 100, 200, 1_000_100, Sample(-25 * H, 100)),  # 25 h behind
        (1_000_100, 200, 200, 1_000_100, Sample(0, 0)),  # no measurable round trip
        (1_000_100, 300, 200, 1_000_100, Sample(0, 0)),  # an echo from the future: rtt 0
    ],
)
def test_one_sample_takes_the_followers_reading_at_the_round_trips_middle(
    follower_wall: int, echo: int, now_mono: int, now_wall: int, expected: Sample
) -> None:
    assert estimate(follower_wall, echo, now_mono, now_wall) == expected


def test_the_shortest_recent_round_trip_wins_and_old_samples_age_out() -> None:
    offsets = ClockOffsets()
    assert offsets.offset_ms(2) is None
    offsets.offer(2, Sample(40, 80))  # a slow round trip: up to 40 ms off
    offsets.offer(2, Sample(3, 2))
    offsets.offer(2, Sample(25, 50))
    assert offsets.offset_ms(2) == 3
    for _ in range(SAMPLES):
        offsets.offer(2, Sample(10, 20))
    assert offsets.offset_ms(2) == 10
    offsets.forget({3})
    assert offsets.offset_ms(2) is None


def test_an_offset_over_a_second_is_logged_once_and_again_after_it_recovered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    offsets = ClockOffsets()
    with caplog.at_level(logging.WARNING):
        offsets.offer(3, Sample(2 * H, 1))
        offsets.offer(3, Sample(2 * H, 1))
        assert len(caplog.records) == 1 and "+7200.000 s" in caplog.text
        for _ in range(SAMPLES):
            offsets.offer(3, Sample(5, 1))
        offsets.offer(3, Sample(-1500, 0))
    assert len(caplog.records) == 2 and "-1.500 s" in caplog.records[1].getMessage()
