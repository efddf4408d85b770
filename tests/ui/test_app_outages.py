"""``chat`` in a real pty through outages of a cluster of real node processes: one
'reconnecting… N s' state, one 'resumed' line, and lines typed meanwhile delivered once,
in order, read from the screen as a person would."""

from __future__ import annotations

from pathlib import Path

from tests.support.chat_pty import alice_beside_bob, chat_beside_cluster, start_all
from tests.support.nodes import PASSWORD

ROWS = 50  # every line of the session stays on the screen, so each one can be counted


def chat_args(tmp_path: Path) -> list[str]:
    """A short --timeout, so that one call gives up (and is called again) early."""
    return ["--history", str(tmp_path / "history"), "--timeout", "1"]


def assert_quiet(text: str, resumed: int) -> None:
    """The outages showed as the status bar's state and one 'resumed' each, no errors.
    (chat may start before the nodes answer: that is an outage too.)"""
    assert text.count("resumed") == resumed, text
    assert "error" not in text and "paused" not in text, text


def test_a_leader_kill_and_a_full_restart_while_typing(tmp_path: Path) -> None:
    with alice_beside_bob(tmp_path, chat_args(tmp_path), size=3, rows=ROWS) as (
        cluster,
        terminal,
        bob,
    ):
        terminal.type("/to bob")
        terminal.wait_for("talking to bob")
        terminal.wait_for("│ connected")
        at_start = terminal.text().count("resumed")  # 1 if chat started before a leader was up

        cluster.nodes[cluster.wait_for_leader()].kill()
        terminal.type("one")
        terminal.type("two")
        terminal.wait_for("reconnecting…")
        terminal.wait_for("you → bob: two")
        terminal.wait_for("resumed")
        terminal.wait_for("│ connected")
        assert_quiet(terminal.text(), resumed=at_start + 1)

        cluster.stop_all()
        terminal.wait_for("reconnecting… 2 s")  # counting up, and nothing said in the pane
        terminal.type("three")
        terminal.type("four")
        terminal.wait_for("… to bob (pending): three\n… to bob (pending): four")
        assert_quiet(terminal.text(), resumed=at_start + 1)
        start_all(cluster)
        terminal.wait_for("you → bob: four")
        terminal.wait_for("│ connected")
        text = terminal.text()
        assert_quiet(text, resumed=at_start + 2)
        assert "(pending)" not in text
        assert text.index("you → bob: three") < text.index("you → bob: four")
        assert [m.body for m in bob.read_messages().messages] == ["one", "two", "three", "four"]


def test_chat_started_while_the_cluster_is_down_waits_then_logs_in(tmp_path: Path) -> None:
    with chat_beside_cluster(tmp_path, 3, chat_args(tmp_path), start=False, rows=ROWS) as (
        cluster,
        terminal,
    ):
        terminal.wait_for("username:")
        terminal.wait_for("reconnecting… 1 s")
        terminal.type("alice")
        terminal.wait_for("password for alice:")
        terminal.type(PASSWORD)
        terminal.wait_for("waiting for the cluster to log in as alice…")
        start_all(cluster)
        terminal.wait_for("create account alice? [y/N]")
        terminal.type("y")
        terminal.wait_for("password again:")
        terminal.type(PASSWORD)
        terminal.wait_for("logged in as alice: 0 unread")
        terminal.wait_for("│ connected")
        assert_quiet(terminal.text(), resumed=1)
        assert terminal.child.isalive()
