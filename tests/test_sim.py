"""The simulator: thousands of random schedules per mode, and proof that it can fail."""

from __future__ import annotations

import pytest

from coord.core import Node
from coord.sim import MODES, Schedule, Simulator, main, replay_command, report, run_seeds

SEEDS_PER_MODE = 2000
CHUNK = 500


@pytest.mark.parametrize("first", range(0, SEEDS_PER_MODE, CHUNK))
@pytest.mark.parametrize("mode", MODES)
def test_random_schedules_keep_every_property(mode: str, first: int) -> None:
    schedule = Schedule(mode=mode)
    failures = [r for r in run_seeds(range(first, first + CHUNK), schedule) if not r.ok]
    assert not failures, report(failures[0], schedule.nodes)


@pytest.mark.parametrize("mode", MODES)
def test_five_node_schedules_keep_every_property(mode: str) -> None:
    schedule = Schedule(mode=mode, nodes=5)
    failures = [r for r in run_seeds(range(200), schedule) if not r.ok]
    assert not failures, report(failures[0], schedule.nodes)


class CommitsWithoutTheIsr(Node):
    """Planted bug: an entry counts as committed once the leader alone has it."""

    def _commit_candidate(self) -> int | None:
        return self.log.stable_last


class VouchesAfterRestart(Node):
    """Planted bug: a restarted voter claims it never restarted."""

    def _vote_reply(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.restarted = False
        return super()._vote_reply(*args, **kwargs)


@pytest.mark.parametrize(
    ("bug", "mode"),
    [
        (CommitsWithoutTheIsr, "failstop"),
        (CommitsWithoutTheIsr, "quorum"),
        (VouchesAfterRestart, "failstop"),
    ],
)
def test_the_simulator_catches_a_planted_bug(bug: type[Node], mode: str) -> None:
    schedule = Schedule(mode=mode)
    caught = next((r for r in run_seeds(range(1000), schedule, bug) if not r.ok), None)
    assert caught is not None, f"{bug.__name__} survived 1000 {mode} schedules"
    assert "Violation" in caught.error
    text = report(caught, schedule.nodes)
    assert replay_command(caught, 3) in text and f"--seed {caught.seed}" in text
    again = Simulator(caught.seed, schedule, node_factory=bug).run()
    assert (again.error, again.trace) == (caught.error, caught.trace), "replays exactly"


@pytest.mark.parametrize("mode", MODES)
def test_membership_changes_racing_crashes_keep_every_property(mode: str) -> None:
    """Removals and re-adds amid the faults; removed nodes are left running."""
    schedule = Schedule(mode=mode, membership=True)
    failures = [r for r in run_seeds(range(300), schedule) if not r.ok]
    assert not failures, report(failures[0], schedule.nodes)


class ForgetsTheRemoved(Node):
    """Planted bug (the code before issue 7): the removed member's progress goes at
    once, so it never hears of its removal and may later win alone on a stale view."""

    def _append_config(self, config):  # type: ignore[no-untyped-def]
        entry = super()._append_config(config)
        for peer in [i for i in self._progress if i not in config.member_ids]:
            del self._progress[peer]
        return entry


def test_the_membership_schedules_catch_a_removed_member_left_uninformed() -> None:
    schedule = Schedule(mode="failstop", membership=True)
    caught = next(
        (r for r in run_seeds(range(1000), schedule, ForgetsTheRemoved) if not r.ok), None
    )
    assert caught is not None, "ForgetsTheRemoved survived 1000 membership schedules"
    assert "Violation" in caught.error
    assert "--membership" in report(caught, schedule.nodes)


def test_the_command_line_replays_one_seed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--mode", "failstop", "--seed", "7"]) == 0
    assert "seed 7: ok" in capsys.readouterr().out
    assert main(["--mode", "quorum", "--schedules", "3", "--first", "10"]) == 0
