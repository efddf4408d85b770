"""``chat`` end to end in a real pseudo-terminal against a real ``chatnode`` process.

pexpect runs the program in a pty and types; pyte interprets what it draws
(prompt_toolkit repaints only the cells that changed, so the raw byte stream
cannot be searched for text), and the test reads the emulated screen.
"""

from __future__ import annotations

import signal
from pathlib import Path

from tests.support.chat_pty import alice_beside_bob, chat_beside_cluster
from tests.support.nodes import PASSWORD
from tests.support.terminal import alt


def test_chat_in_a_real_terminal(tmp_path: Path) -> None:
    history = tmp_path / "history"
    with alice_beside_bob(tmp_path, ["--history", str(history)]) as (cluster, terminal, bob):
        terminal.wait_for("logged in as alice: 0 unread")
        terminal.wait_for(f"alice │ node {cluster.addresses[0]} │ leader 1 │ term 1 │ connected")
        bob.send_message("alice", "hello from bob")
        terminal.wait_for("─ 1:chat ─ 2:bob (1) ─")
        terminal.child.send(alt("2"))
        terminal.wait_for("bob: hello from bob")
        terminal.type("/send bob hi bob")
        terminal.wait_for("you → bob: hi bob")
        assert PASSWORD not in terminal.text()
        assert [m.body for m in bob.read_messages().messages] == ["hi bob"]
        terminal.child.sendcontrol("d")
        assert terminal.exit_status() == 0
    assert (tmp_path / "history-alice").read_text().count("/send bob") == 1


def test_sigterm_leaves_cleanly(tmp_path: Path) -> None:
    with chat_beside_cluster(tmp_path, 1, ["--history", str(tmp_path / "h")]) as (_, terminal):
        terminal.wait_for("username:")
        terminal.child.kill(signal.SIGTERM)
        assert terminal.exit_status() == 0
        assert "Traceback" not in terminal.text()
