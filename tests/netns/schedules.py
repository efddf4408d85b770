"""Network fault schedules against a deployed lab cluster, judged by the checker.

A run: writers in the client host send unique messages for the whole run (the
workload, a subprocess there, records every op and polls every node's role and
term); the fault starts after a calm start, lasts a while and heals; the run
waits until every node is back in sync, reads every recipient's messages back,
dumps every replica and hands it all to :func:`tests.netns.checker.check`.

``python -m tests.netns.schedules --mode quorum|fail-stop [SCHEDULE...]`` (as
root) builds its own lab, deploys with deploy/cluster.sh, runs the schedules and
prints one line per schedule: the table in docs/design.md comes from it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.netns import checker
from tests.netns.deploy import WHEELHOUSE, cluster_sh, skip_reason, status_rows
from tests.netns.hosts import Host, Lab
from tests.netns.workload import load_history, load_readback

CALM_S = 2.0  # writes before the fault
FAULT_S = 5.0
RECOVERY_S = 4.0  # writes after healing
SETTLE_TIMEOUT_S = 60.0
WRITERS = 4
MODES = {"quorum": "2", "fail-stop": "1"}


@dataclass
class Run:
    """One schedule's run: the checker's verdict and what the faults did."""

    schedule: str
    mode: str
    verdict: checker.Verdict
    leaders: list[tuple[int, int]]  # (node, term) in the order they were first seen leading
    ops: tuple[checker.Op, ...]
    fault_at: float  # time.monotonic(), the clock the workload's ops carry too
    healed_at: float
    settled: bool  # every node back in sync after healing
    samples: tuple[checker.StatusSample, ...] = ()  # the status the clients saw, by time
    fault_leader: int = 0  # the node that led when the fault began

    def claimed_leadership(self, node: int, after: float, before: float) -> bool:
        """Whether a client saw node call itself leader between after and before."""
        return any(
            s.node == node and s.role == "leader" and after <= s.at < before for s in self.samples
        )

    def acked(self, after: float, before: float) -> int:
        """Ops invoked after `after` and acknowledged before `before` (same clock)."""
        return sum(
            op.outcome == "ok" and op.invoked >= after and op.completed < before for op in self.ops
        )

    def line(self) -> str:
        c = self.verdict.counts
        terms = " ".join(f"{node}@{term}" for node, term in self.leaders)
        kinds = sorted(self.verdict.by_kind().items())
        result = "ok" if self.verdict.ok else ", ".join(f"{kind} x{n}" for kind, n in kinds)
        if not self.settled:
            result = f"did not settle; {result}"
        during = self.acked(self.fault_at, self.healed_at)
        return (f"{self.mode:9} {self.schedule:22} acked {c.ok:5} (in fault {during:4}) "
                f"info {c.info:4} stored {c.present:5}  leaders {terms:24} {result}")  # fmt: skip


# -- the faults ---------------------------------------------------------------------------

Fault = Callable[[Lab, int, threading.Event], None]
"""(lab, leader id at the start, healed) -> applies the fault until FAULT_S passed."""


def _others(lab: Lab, leader: int) -> list[Host]:
    return [h for i, h in enumerate(lab.hosts, start=1) if i != leader]


def _hold(stop: threading.Event, seconds: float) -> None:
    stop.wait(seconds)


def leader_isolated(lab: Lab, leader: int, stop: threading.Event) -> None:
    lab.partition([lab.host(leader)], _others(lab, leader))
    _hold(stop, FAULT_S)


def follower_split(lab: Lab, leader: int, stop: threading.Event) -> None:
    """1 | 2: one follower alone, the leader with the other."""
    lone, other = _others(lab, leader)
    lab.partition([lone], [lab.host(leader), other])
    _hold(stop, FAULT_S)


def leader_cannot_send(lab: Lab, leader: int, stop: threading.Event) -> None:
    """One-way loss: nothing the leader sends reaches the followers; they still reach it."""
    for follower in _others(lab, leader):
        lab.drop(lab.host(leader), follower)
    _hold(stop, FAULT_S)


def flapping_link(lab: Lab, leader: int, stop: threading.Event) -> None:
    """The leader's link to one follower goes down and up every 300 ms."""
    follower = _others(lab, leader)[0]
    deadline = time.monotonic() + FAULT_S
    while time.monotonic() < deadline and not stop.is_set():
        lab.cut(lab.host(leader), follower)
        stop.wait(0.3)
        lab.heal()
        stop.wait(0.3)


def slow_links(lab: Lab, leader: int, stop: threading.Event) -> None:
    """Every link between nodes slows from 50 ms round trip up to the lease (1 s)."""
    for one_way_ms in (25, 100, 250, 500):
        lab.set_delay(one_way_ms)
        _hold(stop, FAULT_S / 2)
    lab.set_delay(0)


def client_with_minority(lab: Lab, leader: int, stop: threading.Event) -> None:
    """The clients and the leader on one side, the two followers on the other."""
    assert lab.client is not None
    lab.partition([lab.host(leader), lab.client], _others(lab, leader))
    _hold(stop, FAULT_S)


SCHEDULES: dict[str, Fault] = {
    "leader-isolated": leader_isolated,
    "split-1|2": follower_split,
    "one-way-loss": leader_cannot_send,
    "flapping-link": flapping_link,
    "slow-links": slow_links,
    "client-with-minority": client_with_minority,
}


# -- one run ------------------------------------------------------------------------------


def leader_of(lab: Lab) -> int:
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        rows = status_rows(lab.host(1))
        leaders = [r["id"] for r in rows if r.get("up") and r.get("role") == "leader"]
        if len(leaders) == 1:
            return leaders[0]
        if time.monotonic() > deadline:
            raise TimeoutError(f"no single leader: {rows}")
        time.sleep(0.2)


def wait_settled(
    lab: Lab, nodes: Sequence[int] | None = None, within_s: float = SETTLE_TIMEOUT_S
) -> bool:
    """Wait until every node is a member, in sync and caught up, as `chatctl status` sees
    it; False if that did not happen within within_s (a split brain that does not heal)."""
    wanted = set(nodes or range(1, lab.size + 1))
    deadline = time.monotonic() + within_s
    while True:
        rows = status_rows(lab.host(min(wanted)))
        settled = {r["id"] for r in rows if r.get("up") and r.get("in_sync") and r.get("lag") == 0}
        if wanted <= settled and sum(r.get("role") == "leader" for r in rows) == 1:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


@dataclass
class Writers:
    """The workload in the client host: writers running, then a readback and the verdict.

    ``client_args`` are the workload's connection flags beyond --cluster (TLS).
    """

    lab: Lab
    folder: Path
    tag: str
    client_args: Sequence[str] = ()
    nodes: Sequence[int] | None = None  # the cluster's hosts, if not all of the lab's
    proc: subprocess.Popen[bytes] | None = None

    @property
    def members(self) -> list[int]:
        return list(self.nodes or range(1, self.lab.size + 1))

    def _connection(self) -> list[str]:
        return ["--cluster", self.lab.spec(self.members), *self.client_args]

    def _files(self) -> tuple[Path, Path]:
        return self.folder / f"{self.tag}.history.json", self.folder / f"{self.tag}.readback.json"

    def start(self, secs: float) -> Writers:
        assert self.lab.client is not None
        self.proc = self.lab.client.python(
            "tests.netns.workload", "run", *self._connection(),
            "--secs", str(secs), "--writers", str(WRITERS), "--tag", self.tag, "--setup",
            "--out", str(self._files()[0]), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        return self

    def stop(self, timeout: float, *, now: bool = False) -> checker.History:
        """Wait for the run to end (SIGTERM first with ``now``); its history."""
        assert self.proc is not None
        if now:
            self.proc.terminate()
        output, _ = self.proc.communicate(timeout=timeout)
        if self.proc.returncode != 0:
            raise RuntimeError(f"the workload failed ({self.proc.returncode}):\n{output.decode()}")
        return load_history(self._files()[0])

    def judge(self, history: checker.History, settled: bool = True) -> checker.Verdict:
        """Read every inbox back through the client host and check it all (from a cluster
        that did not settle: through its leader, with the replicas as they stand)."""
        assert self.lab.client is not None
        readback_file = self._files()[1]
        reader = self.lab.client.python(
            "tests.netns.workload", "readback", *self._connection(),
            "--out", str(readback_file), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        output, _ = reader.communicate(timeout=120)
        if reader.returncode != 0:
            raise RuntimeError(f"the readback failed ({reader.returncode}):\n{output.decode()}")
        # Earlier runs' messages stay stored; this run's bodies carry its tag.
        readback = {
            recipient: [m for m in rows if m.body.startswith(f"{self.tag}/")]
            for recipient, rows in load_readback(readback_file).items()
        }
        replicas = converged_replicas(self.lab, self.members, SETTLE_TIMEOUT_S if settled else 5)
        return checker.check(history.ops, history.samples, readback, replicas)


def run_schedule(lab: Lab, name: str, mode: str, folder: Path) -> Run:
    fault = SCHEDULES[name]
    writers = Writers(lab, folder, f"{name}-{uuid.uuid4().hex[:6]}")
    secs = CALM_S + FAULT_S + RECOVERY_S + (FAULT_S if name == "slow-links" else 0)
    writers.start(secs)
    stop = threading.Event()
    try:
        time.sleep(CALM_S)  # the schedule's clock: calm writes before the fault
        leader = leader_of(lab)
        fault_at = time.monotonic()
        fault(lab, leader, stop)
    finally:
        lab.heal()
        if lab.delays:
            lab.set_delay(0)
        healed_at = time.monotonic()
        history = writers.stop(timeout=secs + 120)
    # A cluster that must heal gets a minute; a fail-stop split brain is seen in less.
    settled = wait_settled(lab, writers.members, SETTLE_TIMEOUT_S if mode == "quorum" else 15)
    run = Run(name, mode, writers.judge(history, settled), [], history.ops, fault_at, healed_at,
              settled, history.samples, leader)  # fmt: skip
    for sample in sorted(history.samples, key=lambda s: s.at):
        if sample.role == "leader" and (sample.node, sample.term) not in run.leaders:
            run.leaders.append((sample.node, sample.term))
    return run


def replica_of(host: Host) -> checker.ReplicaDump:
    """A node's replicated state, read inside its host: never through the host's files
    from outside (that bypasses SQLite's locks and can crash the node)."""
    reader = host.python(
        "tests.netns.workload", "dump", "--state-db", "/var/lib/chat/state.db",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = reader.communicate(timeout=60)
    if reader.returncode != 0:
        raise RuntimeError(f"reading {host.name}'s state failed: {err.decode().strip()}")
    return {table: tuple(map(tuple, rows)) for table, rows in json.loads(out).items()}


def converged_replicas(
    lab: Lab, nodes: Sequence[int], within_s: float
) -> dict[int, checker.ReplicaDump]:
    """Every node's state once they agree, or as they stand after within_s: the
    readback's logins are writes that followers may still be applying."""
    deadline = time.monotonic() + within_s
    while True:
        dumps = {i: replica_of(lab.host(i)) for i in nodes}
        if len({repr(d) for d in dumps.values()}) == 1 or time.monotonic() > deadline:
            return dumps
        time.sleep(0.2)


def deploy(lab: Lab, mode: str) -> Path:
    hosts_file = lab.hosts_file()
    cluster_sh(lab, "up", str(hosts_file), "--min-insync", MODES[mode],
               "--wheels", str(WHEELHOUSE))  # fmt: skip
    return hosts_file


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.netns.schedules")
    parser.add_argument("--mode", choices=sorted(MODES), default="quorum")
    parser.add_argument("schedules", nargs="*", metavar="SCHEDULE",
                        help=f"some of: {', '.join(SCHEDULES)} (default: all)")  # fmt: skip
    args = parser.parse_args(argv)
    if unknown := set(args.schedules) - set(SCHEDULES):
        parser.error(f"unknown schedule(s) {', '.join(sorted(unknown))}")
    if (reason := skip_reason()) is not None:
        parser.exit(1, f"schedules: {reason}\n")
    for run in run_all(args.mode, args.schedules or list(SCHEDULES)):
        print(run.line(), flush=True)
        if not run.verdict.ok:
            print(run.verdict.summary(limit=5), flush=True)


def run_all(mode: str, names: Sequence[str]) -> Iterator[Run]:
    """Quorum mode runs every schedule on one cluster (none may damage it); fail-stop mode
    on a fresh cluster each, since a split brain there leaves a node that cannot rejoin."""
    with tempfile.TemporaryDirectory(prefix="chat-faults-") as tmp:
        if mode == "quorum":
            with Lab(Path(tmp, "lab"), 3, delays=True) as lab:
                deploy(lab, mode)
                for name in names:
                    yield run_schedule(lab, name, mode, Path(tmp))
            return
        for name in names:
            with Lab(Path(tmp, f"lab-{uuid.uuid4().hex[:6]}"), 3, delays=True) as lab:
                deploy(lab, mode)
                yield run_schedule(lab, name, mode, Path(tmp))


if __name__ == "__main__":
    main()
