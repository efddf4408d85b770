"""free_port (chatnode/local_cluster.py): the ports multi-process tests bind their nodes to."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from chatnode import local_cluster
from chatnode.local_cluster import free_port


def test_ports_come_from_below_the_ephemeral_range_and_never_twice() -> None:
    start = local_cluster._ephemeral_range_start()
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == 200
    assert all(local_cluster.LOWEST_PORT <= p < start for p in ports)


def test_a_port_something_listens_on_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        taken = held.getsockname()[1]
        held.listen()
        monkeypatch.setattr(local_cluster, "LOWEST_PORT", taken)
        monkeypatch.setattr(local_cluster, "_ephemeral_range_start", lambda: taken + 50)
        assert taken < free_port() < taken + 50


def test_the_range_is_read_from_the_kernel(tmp_path: Path) -> None:
    (tmp_path / "range").write_text("40000\t60999\n")
    assert local_cluster._ephemeral_range_start(tmp_path / "range") == 40_000
    assert local_cluster._ephemeral_range_start(tmp_path / "missing") == 32_768
