"""The cluster clock's rules, as a table: what a node stamps, given what it has observed.

Each row is a history of one node: ``observe C@m`` (cluster time C was stamped at or
before our monotonic time m), ``stamp wall@m -> expected`` by a leader whose wall clock
no majority vouches for, and ``agreed wall@m -> expected`` by one a majority agrees
with (rule 4). Wall clocks hours ahead and behind, leaders that change, idle gaps, a
stop of the whole cluster, a clock that never observed anything.
"""

from __future__ import annotations

import pytest

from chatnode.cluster_clock import ClusterClock

H = 3_600_000  # an hour in ms
T0 = 1_700_000_000_000  # some real Unix time

TABLE: list[tuple[str, list[tuple[str, int, int, int | None]]]] = [
    (
        "a new cluster's first leader has only its wall clock",
        [("stamp", T0, 5, T0), ("stamp", T0 + 10, 15, T0 + 10)],
    ),
    (
        "wall clock agreeing with real time: stamps follow it",
        [("observe", T0, 100, None), ("stamp", T0 + 50, 150, T0 + 50)],
    ),
    (
        "a new leader 2 h ahead advances by the 40 ms it measured, not 2 h",
        [("observe", T0, 1_000, None), ("stamp", T0 + 2 * H, 1_040, T0 + 40)],
    ),
    (
        "a new leader 25 h ahead: the same, however far",
        [("observe", T0, 1_000, None), ("stamp", T0 + 25 * H, 1_000, T0)],
    ),
    (
        "a new leader 2 h behind: never backwards; time stands still",
        [("observe", T0, 1_000, None), ("stamp", T0 - 2 * H, 5_000, T0)],
    ),
    (
        "behind, then its wall clock catches up: it follows the wall again",
        [
            ("observe", T0, 0, None),
            ("stamp", T0 - 10, 10, T0),
            ("stamp", T0 + 5, 30, T0 + 5),
        ],
    ),
    (
        "ahead: time runs at the monotonic rate from each stamp it makes",
        [
            ("observe", T0, 0, None),
            ("stamp", T0 + H, 100, T0 + 100),
            ("stamp", T0 + H, 250, T0 + 250),
            ("stamp", T0 + H + 1, 250, T0 + 250),
        ],
    ),
    (
        "an idle hour as a follower counts fully: the monotonic clock measured it",
        [("observe", T0, 0, None), ("stamp", T0 + H + 5, H, T0 + H)],
    ),
    (
        "an older stamp observed later says nothing new",
        [
            ("observe", T0 + 100, 100, None),
            ("observe", T0, 5_000, None),
            ("stamp", T0 + H, 200, T0 + 200),
        ],
    ),
    (
        "the same time stamped again later (a leader whose time stood still) counts from then",
        [
            ("observe", T0, 100, None),
            ("observe", T0, 900, None),
            ("stamp", T0 + H, 1_000, T0 + 100),
        ],
    ),
    (
        "a leader whose time stood still, then one whose clock is right: no jump",
        [
            ("observe", T0, 0, None),  # we stamped T0 ourselves, long ago
            ("observe", T0, H, None),  # a lagging leader stamped T0 again, an hour later
            ("stamp", T0 + H, H + 10, T0 + 10),  # by 10 ms, not by the hour
        ],
    ),
    (
        "a monotonic reading that went backwards (a new process) never lowers the floor",
        [("observe", T0, 10_000, None), ("stamp", T0 + H, 50, T0)],
    ),
    (
        "after an hour's stop of every node: behind by the hour until a majority agrees",
        [
            ("observe", T0, 0, None),  # the state read at start; the stop is not measured
            ("stamp", T0 + H + 10, 10, T0 + 10),
            ("agreed", T0 + H + 20, 20, T0 + H + 20),  # real time again
            ("stamp", T0 + H + 30, 30, T0 + H + 30),  # and the ceiling now starts there
        ],
    ),
    (
        "a majority agreeing with a clock behind the floor: still never backwards",
        [("observe", T0, 0, None), ("agreed", T0 - H, 10, T0)],
    ),
    (
        "agreement within the ceiling changes nothing",
        [("observe", T0, 0, None), ("agreed", T0 + 5, 10, T0 + 5)],
    ),
]


def _refused(wall_ms: int, mono_ms: int) -> bool:
    return False


def _vouched(wall_ms: int, mono_ms: int) -> bool:
    return True


def _not_asked(wall_ms: int, mono_ms: int) -> bool:
    raise AssertionError("agreement asked for a wall clock within the ceiling")


@pytest.mark.parametrize(("history"), [row[1] for row in TABLE], ids=[row[0] for row in TABLE])
def test_stamps(history: list[tuple[str, int, int, int | None]]) -> None:
    clock = ClusterClock()
    for step, (what, value, mono, expected) in enumerate(history):
        if what == "observe":
            clock.observe(value, mono)
        else:
            agreed = _vouched if what == "agreed" else _refused
            assert clock.stamp(value, mono, agreed) == expected, f"step {step}"


def test_agreement_is_asked_only_above_the_ceiling() -> None:
    """Asking costs the leader a look at every member's clock: only when it matters."""
    clock = ClusterClock()
    assert clock.stamp(T0, 0, _not_asked) == T0  # nothing observed: no ceiling
    assert clock.stamp(T0 + 50, 50, _not_asked) == T0 + 50
    assert clock.stamp(T0 - H, 60, _not_asked) == T0 + 50


def test_stamps_never_decrease_and_never_outrun_the_monotonic_clock() -> None:
    """A walk of wall clocks jumping hours either way: every stamp is at least the one
    before and ahead of the first by no more than the monotonic time that passed."""
    clock = ClusterClock()
    clock.observe(T0, 0)
    previous = T0
    for mono in range(0, 200_000, 997):
        wall = T0 + mono + ((mono // 7919) % 5 - 2) * 3 * H  # -6 h .. +6 h, changing
        stamp = clock.stamp(wall, mono, _refused)
        assert previous <= stamp <= T0 + mono
        previous = stamp
