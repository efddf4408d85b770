"""Real ``chatnode`` processes' logs: JSON lines naming the election with node, term and
role; text lines without a second timestamp under the journal; a bad --log-format is a
usage error."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chatnode.local_cluster import Cluster, NodeProcess, free_port, local_cluster
from tests.support.waits import wait_until

EXIT_WITHIN_S = 15.0
TEXT_LINE = re.compile(r"[A-Z]+ node=\d+ term=\d+ role=\w+ event=[\w.]+: .*")


def records(node: NodeProcess) -> list[dict[str, Any]]:
    """Every line of the node's stdout and stderr, each of which must be one JSON object."""
    return [json.loads(line) for line in node.log_text().splitlines()]


def events(node: NodeProcess, name: str) -> list[dict[str, Any]]:
    return [r for r in records(node) if r["event"] == name]


def stop(node: NodeProcess) -> None:
    """SIGTERM, and the clean exit that follows it."""
    node.signal(signal.SIGTERM)
    assert node.wait(timeout=EXIT_WITHIN_S) == 0


def test_a_cluster_logging_json_names_its_election_with_node_term_and_role(
    tmp_path: Path,
) -> None:
    with local_cluster(tmp_path, size=3, extra_args=["--log-format", "json"]) as cluster:
        leader = cluster.nodes[cluster.wait_for_leader()]
        followers = [n for n in cluster.nodes.values() if n is not leader]
        for follower in followers:
            wait_until(lambda f=follower: events(f, "leader_known"), "followers hear the leader")
        for node in [*followers, leader]:
            stop(node)
    elected = events(leader, "leader_elected")[-1]
    term = elected["term"]
    assert (elected["node"], elected["role"], elected["level"]) == (
        leader.node_id,
        "leader",
        "INFO",
    )
    assert term >= 1 and elected["time"] and elected["message"]
    (serving,) = events(leader, "serving")
    assert serving["node"] == leader.node_id and leader.address in serving["message"]
    # Lines after the election carry the term and role the node has now.
    assert [(r["term"], r["role"]) for r in events(leader, "stopping")] == [(term, "leader")]
    for follower in followers:
        known = events(follower, "leader_known")[-1]
        assert (known["node"], known["term"], known["role"]) == (follower.node_id, term, "follower")
        (stopping,) = events(follower, "stopping")
        assert (stopping["term"], stopping["role"]) == (term, "follower")


def test_under_the_journal_a_node_leaves_the_time_to_it(tmp_path: Path) -> None:
    cluster = Cluster.plan(tmp_path, {1: f"127.0.0.1:{free_port()}"})
    node = cluster.nodes[1]
    node.log_path.touch()
    st = os.stat(node.log_path)
    node.env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}", "CHAT_LOG_FORMAT": "text"}
    try:
        node.start()
        cluster.wait_for_leader()
        stop(node)
    finally:
        cluster.stop_all()
    lines = node.log_text().splitlines()
    assert any("event=serving:" in line for line in lines), lines
    assert all(TEXT_LINE.fullmatch(line) for line in lines), lines


@pytest.mark.parametrize(
    ("args", "env"),
    [(["--log-format", "xml"], {}), ([], {"CHAT_LOG_FORMAT": "JSON lines"})],
)
def test_a_bad_log_format_is_a_usage_error(args: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chatnode.main", "--id", "1", "--cluster", "1=h:1", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env},
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "log format" in line
