"""``chat`` end to end in a real pseudo-terminal against a real ``chatnode`` process.

pexpect runs the program in a pty and types; pyte interprets what it draws
(prompt_toolkit repaints only the cells that changed, so the raw byte stream
cannot be searched for text), and the test reads the emulated screen.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatnode.local_cluster import local_cluster
from client.sync import SyncChatClient
from tests.support.nodes import PASSWORD
from tests.support.terminal import Terminal


@pytest.fixture
def bob_and_cluster(tmp_path: Path) -> Iterator[tuple[SyncChatClient, str]]:
    with local_cluster(tmp_path, size=1) as cluster, SyncChatClient(cluster.addresses) as bob:
        bob.create_account("bob", PASSWORD)
        bob.login("bob", PASSWORD)
        yield bob, cluster.spec


def test_chat_in_a_real_terminal(
    bob_and_cluster: tuple[SyncChatClient, str], tmp_path: Path
) -> None:
    bob, spec = bob_and_cluster
    address = spec.partition("=")[2]
    history = tmp_path / "history"
    terminal = Terminal(["-m", "client.app", "--cluster", spec, "--history", str(history)])
    try:
        terminal.sign_up("alice", PASSWORD)
        terminal.wait_for("logged in as alice: 0 unread")
        terminal.wait_for(f"alice │ node {address} │ leader 1 │ term 1 │ connected")
        bob.send_message("alice", "hello from bob")
        terminal.wait_for("bob: hello from bob")
        terminal.type("/send bob hi bob")
        terminal.wait_for("you → bob: hi bob")
        assert PASSWORD not in terminal.text()
        assert [m.body for m in bob.read_messages().messages] == ["hi bob"]
        terminal.child.sendcontrol("d")
        assert terminal.exit_status() == 0
    finally:
        terminal.kill()
    assert (tmp_path / "history-alice").read_text().count("/send bob") == 1


def test_sigterm_leaves_cleanly(
    bob_and_cluster: tuple[SyncChatClient, str], tmp_path: Path
) -> None:
    _, spec = bob_and_cluster
    terminal = Terminal(["-m", "client.app", "--cluster", spec, "--history", str(tmp_path / "h")])
    try:
        terminal.wait_for("username:")
        terminal.child.kill(signal.SIGTERM)
        assert terminal.exit_status() == 0
        assert "Traceback" not in terminal.text()
    finally:
        terminal.kill()
