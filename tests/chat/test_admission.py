"""The per-account proposal budget, on a fake clock: fair shares of the log, bounded bursts."""

from __future__ import annotations

import pytest

from chatnode.admission import ACTIVE_WINDOW_S, BURST_S, ProposalBudget
from proto.errors import ResourceExhausted


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def admitted(budget: ProposalBudget, account: int, tries: int) -> int:
    count = 0
    for _ in range(tries):
        try:
            budget.admit(account)
        except ResourceExhausted:
            continue
        count += 1
    return count


@pytest.mark.parametrize(
    ("rate", "floor", "accounts", "share"),
    [
        (100.0, 5.0, 1, 100.0),  # alone: the whole budget
        (100.0, 5.0, 4, 25.0),  # split evenly
        (100.0, 5.0, 40, 5.0),  # never below the floor
    ],
)
def test_each_active_account_gets_its_share_as_a_burst_then_at_its_rate(
    rate: float, floor: float, accounts: int, share: float
) -> None:
    clock = Clock()
    budget = ProposalBudget(rate, floor, clock)
    for other in range(1, accounts):
        budget.admit(other)
    assert admitted(budget, 0, 10_000) == int(share * BURST_S)
    clock.now += 2.0  # two seconds later, with all of them still active
    assert budget.active == accounts
    assert admitted(budget, 0, 10_000) == int(share * BURST_S)  # a bucket holds one burst
    clock.now += 0.5
    assert admitted(budget, 0, 10_000) == int(share * 0.5)


def test_a_refusal_is_one_line_and_costs_no_token() -> None:
    clock = Clock()
    budget = ProposalBudget(10.0, 1.0, clock)
    assert admitted(budget, 7, 10) == 10
    with pytest.raises(ResourceExhausted) as refused:
        budget.admit(7)
    assert "\n" not in str(refused.value) and "10 a second" in str(refused.value)
    clock.now += 0.1
    assert admitted(budget, 7, 5) == 1


def test_a_flood_from_one_account_leaves_the_others_their_share() -> None:
    clock = Clock()
    budget = ProposalBudget(100.0, 5.0, clock)
    flooded = polite = 0
    for _ in range(100):  # ten seconds in steps of 0.1 s
        clock.now += 0.1
        flooded += admitted(budget, 1, 1000)
        polite += admitted(budget, 2, 3)
    assert polite == 300  # never refused: 30 a second is within its share of 50
    assert flooded <= 100 * 10 * 0.5 + 100  # at most its half, plus the first burst


def test_idle_accounts_are_forgotten_and_stop_counting() -> None:
    clock = Clock()
    budget = ProposalBudget(100.0, 1.0, clock)
    for account in range(1000):
        budget.admit(account)
    assert budget.active == 1000
    clock.now += ACTIVE_WINDOW_S + 0.1
    budget.admit(5000)
    assert budget.active == 1
    assert budget.share() == 100.0


def test_rates_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ProposalBudget(0.0, 1.0)
