"""Command-line contracts of docs/api.md, "Processes and commands": flags, env vars, exit
codes, one-line errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from chatnode.local_cluster import free_port, local_cluster
from chatnode.main import config_from_args
from proto import release
from proto.credentials import write_new_secret


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--id", "1"],
        ["--id", "4", "--cluster", "1=127.0.0.1:1"],
        ["--id", "1", "--cluster", "1=nohostport"],
        ["--id", "1", "--cluster", "1=h:1,1=h:2"],
        ["--id", "1", "--cluster", "1=h:1", "--min-insync", "2"],
        ["--id", "x", "--cluster", "1=h:1"],
        ["--id", "1", "--cluster", "1=h:1", "--heartbeat-ms", "2000"],
        ["--id", "1", "--cluster", "1=h:1", "--ops-per-s", "0"],
        ["--id", "1", "--cluster", "1=h:1", "--ops-per-s", "lots"],
    ],
)
def test_chatnode_bad_usage_exits_2_with_one_line(argv: list[str]) -> None:
    result = run("chatnode.main", *argv, env={"CHAT_NODE_ID": "", "CHAT_CLUSTER": ""})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("module", "program"),
    [("chatnode.main", "chatnode"), ("client.app", "chat"), ("client.chatctl", "chatctl")],
)
def test_version_names_the_package_and_where_its_files_came_from(module: str, program: str) -> None:
    result = run(module, "--version")
    assert result.returncode == 0, result.stderr
    name, version = result.stdout.split()
    assert name == program
    assert re.fullmatch(r"\d+\.\d+\.\d+\+(git\.[0-9a-f]{7,}(\.dirty)?|release\.\w+)", version)
    assert version == release.version()


@pytest.mark.parametrize(
    "argv",
    [
        ["--id", "1", "--cluster", "1=127.0.0.1:1,2=127.0.0.1:2"],
        ["--id", "1", "--cluster", "1=127.0.0.1:1", "--join"],
    ],
)
def test_chatnode_with_peers_and_no_credentials_refuses_to_start(argv: list[str]) -> None:
    result = run("chatnode.main", *argv, env={"CHAT_CLUSTER_SECRET_FILE": ""})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--cluster-secret-file" in lines[0], result.stderr


@pytest.mark.parametrize("content", ["", "short\n", "x" * 31])
def test_chatnode_refuses_a_secret_shorter_than_32_bytes(tmp_path: Path, content: str) -> None:
    secret = tmp_path / "cluster.secret"
    secret.write_text(content)
    argv = ["--id", "1", "--cluster", "1=127.0.0.1:1,2=127.0.0.1:2"]
    result = run("chatnode.main", *argv, "--cluster-secret-file", str(secret))
    assert result.returncode == 2 and "at least 32" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_chatnode_flags_read_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CHAT_NODE_ID", "2")
    monkeypatch.setenv("CHAT_CLUSTER", "1=a:1,2=b:2,3=c:3")
    monkeypatch.setenv("CHAT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CHAT_LEASE_MS", "1500")
    monkeypatch.setenv("CHAT_HEARTBEAT_MS", "150")
    monkeypatch.setenv("CHAT_MIN_INSYNC", "2")
    secret = tmp_path / "cluster.secret"
    write_new_secret(secret)
    monkeypatch.setenv("CHAT_CLUSTER_SECRET_FILE", str(secret))
    config = config_from_args([])
    assert (config.node_id, config.address, config.data_dir) == (2, "b:2", tmp_path)
    assert (config.lease_ms, config.heartbeat_ms, config.min_insync) == (1500, 150, 2)
    assert config.cluster_secret is not None
    assert config_from_args(["--id", "3"]).node_id == 3  # a flag beats its variable


def test_chatctl_status_prints_members(tmp_path: Path) -> None:
    with local_cluster(tmp_path, size=1) as cluster:
        table = run("client.chatctl", "--cluster", cluster.spec, "status")
        assert table.returncode == 0, table.stderr
        header, row = table.stdout.strip().splitlines()
        assert header.split()[:4] == ["ID", "ADDRESS", "ROLE", "TERM"]
        assert row.split()[:3] == ["1", cluster.nodes[1].address, "leader"]
        machine = run("client.chatctl", "--cluster", cluster.spec, "status", "--json")
        assert json.loads(machine.stdout)[0]["role"] == "leader"


def test_chatctl_status_with_nobody_up_exits_1() -> None:
    result = run("client.chatctl", "--cluster", f"1=127.0.0.1:{free_port()}", "status")
    assert result.returncode == 1
    assert "DOWN" in result.stdout and result.stderr.strip() == "chatctl: no member answered"


def test_chatctl_bad_usage_exits_2() -> None:
    result = run("client.chatctl", "--cluster", "nonsense", "status")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
