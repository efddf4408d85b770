"""The fault tests' whole chain on loopback: workload run, readback, replica dumps, check.

Three real nodes; the workload runs as the subprocess it will be in a network
namespace (its command line, its files). Meanwhile the leader is killed with
SIGKILL and restarted. Once the cluster has caught up, the readback and every
replica's dump go to the checker, which must find nothing; and with one
acknowledged message taken out of the readback, it must find exactly that.
CLOCK_MONOTONIC is one clock for every process, so the test's kill time and
the workload's op times compare.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from chatnode.local_cluster import Cluster, local_cluster
from client.library import ChatError, DeadlineExceeded, NotFound, Unavailable
from tests.netns.checker import History, Op, Stored, check
from tests.netns.workload import (
    classify,
    dump_replica,
    load_history,
    load_readback,
    recipient_names,
    replica_inbox,
    save_readback,
    write_json,
)
from tests.netns.workload import main as workload_main
from tests.support.faults import NODE_ARGS, WAIT_S, Members, wait_caught_up
from tests.support.waits import wait_until

ROOT = Path(__file__).resolve().parents[2]
SECS = 8.0  # long enough for a kill, a failover and a restart while the writers write
WRITERS = 3
WRITES_FLOWING = 30  # log entries that show sends are committing
Replicas = dict[int, dict[str, tuple[tuple[object, ...], ...]]]


@dataclass(frozen=True)
class Chain:
    """Everything one run of the chain produced, for the tests to check."""

    history: History
    readback: dict[str, list[Stored]]
    again: dict[str, list[Stored]]  # a second readback (with a second, idempotent --setup)
    replicas: Replicas
    state_dbs: dict[int, Path]
    killed: int
    killed_at: float
    restarted_at: float


@contextlib.contextmanager
def workload(
    tmp: Path, cluster: Cluster, verb: str, *args: str
) -> Iterator[subprocess.Popen[bytes]]:
    """The workload's command line as a subprocess, its output in tmp/<verb>.log; killed
    on the way out if still running."""
    argv = [sys.executable, "-m", "tests.netns.workload", verb, "--cluster", cluster.spec]
    with (tmp / f"{verb}.log").open("wb") as log:
        proc = subprocess.Popen([*argv, *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def finished(proc: subprocess.Popen[bytes], tmp: Path, verb: str, within_s: float) -> None:
    """Wait for a workload subprocess to exit 0."""
    code = proc.wait(timeout=within_s)
    assert code == 0, f"workload {verb} exited {code}: {(tmp / f'{verb}.log').read_text()}"


def commit_index(cluster: Cluster, node_id: int) -> int:
    status = cluster.status(node_id)
    return status.commit_index if status is not None else -1


def wait_writes(cluster: Cluster, leader: int) -> None:
    """Until the leader committed WRITES_FLOWING more entries: the writers are at work."""
    start = commit_index(cluster, leader)
    wait_until(
        lambda: commit_index(cluster, leader) >= start + WRITES_FLOWING,
        f"node {leader} committing sends",
    )


def kill_and_restart_leader(
    cluster: Cluster, run: subprocess.Popen[bytes]
) -> tuple[int, float, float]:
    """SIGKILL the leader under load, let a new one take the load, start the old one again."""
    leader = cluster.wait_for_leader()
    wait_writes(cluster, leader)
    cluster.nodes[leader].kill()
    killed_at = time.monotonic()
    successor = cluster.wait_for_leader(timeout=WAIT_S)  # the dead are not asked
    wait_writes(cluster, successor)
    cluster.nodes[leader].start()
    restarted_at = time.monotonic()
    assert run.poll() is None, "the run ended before the old leader was back: raise SECS"
    return leader, killed_at, restarted_at


async def caught_up(cluster: Cluster) -> None:
    members = Members(cluster)
    try:
        await wait_caught_up(members)
    finally:
        await members.close()


def settled_dumps(state_dbs: dict[int, Path]) -> Replicas:
    """Every replica's dump, once all agree; what they hold at the deadline if they never do
    (then the checker names the divergence). Followers apply a little after they learn the
    commit index, so equal commit indexes are not yet equal dumps."""
    dumps: Replicas = {}

    def agree() -> bool:
        dumps.update({i: dump_replica(path) for i, path in state_dbs.items()})
        return all(d == dumps[min(dumps)] for d in dumps.values())

    with contextlib.suppress(TimeoutError):
        wait_until(agree, "every replica holds the same", WAIT_S)
    return dumps


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    tmp = tmp_path_factory.mktemp("workload")
    with local_cluster(tmp, size=3, extra_args=NODE_ARGS) as cluster:
        try:
            run_args = ["--setup", "--secs", str(SECS), "--writers", str(WRITERS)]
            with workload(tmp, cluster, "run", *run_args, "--out", str(tmp / "run.json")) as run:
                killed, killed_at, restarted_at = kill_and_restart_leader(cluster, run)
                finished(run, tmp, "run", SECS + WAIT_S)
            for out, setup in (("readback.json", ()), ("again.json", ("--setup",))):
                with workload(tmp, cluster, "readback", *setup, "--out", str(tmp / out)) as read:
                    finished(read, tmp, "readback", 2 * WAIT_S)
            asyncio.run(caught_up(cluster))
            state_dbs = {i: node.data_dir / "state.db" for i, node in cluster.nodes.items()}
            replicas = settled_dumps(state_dbs)
        except BaseException as exc:
            exc.add_note(cluster.log_tails())
            raise
    yield Chain(
        load_history(tmp / "run.json"),
        load_readback(tmp / "readback.json"),
        load_readback(tmp / "again.json"),
        replicas,
        state_dbs,
        killed,
        killed_at,
        restarted_at,
    )


# -- the chain, through a leader's kill -9 and restart --------------------------------------------


@pytest.mark.timeout(240)
def test_a_run_through_a_leader_kill_and_restart_checks_out(chain: Chain) -> None:
    verdict = check(chain.history.ops, chain.history.samples, chain.readback, chain.replicas)
    assert verdict.ok, verdict.summary()
    ops = chain.history.ops
    assert verdict.counts.ok >= 20, verdict.summary()
    assert any(op.outcome == "ok" and op.invoked > chain.restarted_at for op in ops), (
        "no send was acknowledged after the old leader came back"
    )
    leaders = [s for s in chain.history.samples if s.role == "leader"]
    before = {s.node for s in leaders if s.at < chain.killed_at}
    after = {s.node for s in leaders if s.at > chain.killed_at}
    assert before == {chain.killed}, f"the poller saw leaders {before} before the kill"
    assert after and chain.killed not in after, f"the poller saw leaders {after} after it"
    assert {s.node for s in chain.history.samples} == set(chain.replicas)
    assert {"accounts", "messages"} <= set(chain.replicas[1]) and "meta" not in chain.replicas[1]


@pytest.mark.timeout(240)
def test_an_acknowledged_message_dropped_from_the_readback_fails_the_check(
    chain: Chain,
) -> None:
    victim = next(op for op in chain.history.ops if op.outcome == "ok")
    tampered = {
        name: [m for m in inbox if m.body != victim.body] for name, inbox in chain.readback.items()
    }
    verdict = check(chain.history.ops, chain.history.samples, tampered, chain.replicas)
    assert not verdict.ok
    assert [str(v) for v in verdict.violations] == [
        f"lost: {victim.body!r} acknowledged as id {victim.message_id}, absent"
    ]


@pytest.mark.timeout(240)
def test_reading_back_changes_nothing_a_later_readback_sees(chain: Chain) -> None:
    assert chain.again == chain.readback


@pytest.mark.timeout(240)
def test_each_replica_inbox_is_the_readback(chain: Chain) -> None:
    """The helper tests/support/faults.py shares reads the same messages the leader served."""
    for name in recipient_names(3):
        served = [tuple(m) for m in chain.readback[name]]
        for node_id, path in chain.state_dbs.items():
            assert replica_inbox(path, name) == served, f"node {node_id}, {name}"


# -- the pieces, without a cluster ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (NotFound("no such user"), "fail"),
        (ChatError("bad", grpc.StatusCode.INVALID_ARGUMENT), "fail"),
        (ChatError("denied", grpc.StatusCode.PERMISSION_DENIED), "fail"),
        (Unavailable("no leader answered within 3s"), "info"),
        (DeadlineExceeded("deadline"), "info"),
        (ChatError("internal error", grpc.StatusCode.INTERNAL), "info"),
        (ChatError("too big", grpc.StatusCode.RESOURCE_EXHAUSTED), "info"),
    ],
)
def test_only_a_definite_refusal_is_a_fail(error: ChatError, outcome: str) -> None:
    assert classify(error) == (outcome, f"{error.code.name}: {error}")


def test_the_run_and_readback_files_round_trip(tmp_path: Path) -> None:
    history = History((Op(1, "t/w1/0", "inbox-0", 1.0, 2.0, "ok", 7),), ())
    write_json(tmp_path / "run.json", history.to_dict())
    assert load_history(tmp_path / "run.json") == history
    save_readback(tmp_path / "readback.json", {"inbox-0": [(7, "writer-1", "t/w1/0")]})
    assert load_readback(tmp_path / "readback.json") == {"inbox-0": [(7, "writer-1", "t/w1/0")]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["readback.json", "run.json"]


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--out", "x"],  # no --secs
        ["run", "--secs", "1", "--out", "x", "--writers", "0"],
        ["readback", "--out", "x", "--cluster", "nonsense"],
        ["readback", "--out", "x", "--tls-cert", "c"],
        ["frob"],
    ],
)
def test_bad_usage_exits_2_with_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        workload_main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("workload"), err
