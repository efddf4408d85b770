"""Network faults on namespace hosts, judged by the Jepsen-style checker.

Quorum mode must come through every schedule with nothing lost, duplicated,
invented or out of order, identical replicas and one leader per term, and must
keep writing wherever a majority and the client can still reach each other.
Fail-stop mode runs the same schedules; docs/design.md records what it does
("Network faults on real hosts"): the tests here hold it to that record.
The schedules, and ``python -m tests.netns.schedules`` that prints the table,
live in tests/netns/schedules.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns.deploy import skip_unless_possible
from tests.netns.hosts import Lab
from tests.netns.schedules import SCHEDULES, Run, deploy, run_all, run_schedule

skip_unless_possible()
pytestmark = pytest.mark.timeout(900)

LEASE_S = 1.0  # the product's default lease, which cluster.sh deploys with
MAJORITY_KEEPS_WRITING = ("leader-isolated", "split-1|2", "one-way-loss", "flapping-link")
# The suite runs one schedule of each liveness rule below; CHAT_NETNS_SCHEDULES=all runs the
# whole table here (as `python -m tests.netns.schedules --mode quorum` does, outside pytest).
SAMPLE = ("leader-isolated", "client-with-minority", "slow-links")
RUN = list(SCHEDULES) if os.environ.get("CHAT_NETNS_SCHEDULES") == "all" else list(SAMPLE)


@pytest.fixture(scope="module")
def quorum(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with Lab(tmp_path_factory.mktemp("quorum"), 3, delays=True) as lab:
        deploy(lab, "quorum")
        yield lab


@pytest.mark.parametrize("schedule", RUN)
def test_quorum_mode_comes_through(quorum: Lab, schedule: str, tmp_path: Path) -> None:
    run = run_schedule(quorum, schedule, "quorum", tmp_path)
    assert run.verdict.ok, f"{run.line()}\n{run.verdict.summary()}"
    assert run.acked(run.healed_at, run.healed_at + 60) > 0, "no writes after healing"
    assert_liveness(run)


def assert_liveness(run: Run) -> None:
    """Progress wherever the model allows it, and none where it must not be."""
    elected = run.fault_at + 3 * LEASE_S  # a lease to notice, an election, a retry
    if run.schedule in MAJORITY_KEEPS_WRITING:
        assert run.acked(elected, run.healed_at) > 0, f"the majority stopped: {run.line()}"
    if run.schedule == "client-with-minority":
        # The clients reach only the old leader, which cannot commit without a majority,
        # and which stops calling itself leader a lease after it last heard one
        # (check-quorum; the poll and a heartbeat are the margin).
        assert run.acked(run.fault_at + LEASE_S, run.healed_at) == 0, run.line()
        old = run.fault_leader
        assert run.claimed_leadership(old, run.fault_at, run.fault_at + 0.5), "no sample"
        stepped_down = run.fault_at + LEASE_S + 0.5
        assert not run.claimed_leadership(old, stepped_down, run.healed_at), run.line()
    if run.schedule == "slow-links":
        # Round trips of 50 and 200 ms are well inside the lease: writes go on.
        assert run.acked(run.fault_at, run.fault_at + 2.0) > 0, run.line()


def test_fail_stop_mode_survives_a_flapping_link() -> None:
    (run,) = run_all("fail-stop", ["flapping-link"])
    assert run.verdict.ok and run.settled, f"{run.line()}\n{run.verdict.summary()}"


def test_fail_stop_mode_splits_when_the_leader_is_isolated() -> None:
    """The documented risk, shown: both sides accept writes, and the old leader's are lost
    once the network heals (it cannot rejoin: its committed entries differ)."""
    (run,) = run_all("fail-stop", ["leader-isolated"])
    kinds = run.verdict.by_kind()
    assert kinds["lost"] > 0 and kinds["divergent"] > 0 and not run.settled, run.line()
    assert run.acked(run.fault_at + 3 * LEASE_S, run.healed_at) > 0, "the old leader acked alone"
