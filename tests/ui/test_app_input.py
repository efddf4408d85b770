"""``chat`` in a real pty: multi-line messages, pastes up to the body limit, and the
per-account history file, read from the screen and the disk as a person would."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.sync import SyncChatClient
from tests.support.chat_pty import alice_beside_bob, chat_beside_cluster
from tests.support.nodes import PASSWORD
from tests.support.terminal import ALT_ENTER, Terminal
from tests.support.waits import wait_until

BODY_LIMIT = 65_536


@pytest.fixture
def alice_and_bob(tmp_path: Path) -> Iterator[tuple[Terminal, SyncChatClient]]:
    """chat in a pty, signed up as alice and talking to bob, and bob's client."""
    prefix = tmp_path / "data" / "history"
    with alice_beside_bob(tmp_path, ["--history", str(prefix)]) as (_, alice, bob):
        alice.type("/to bob")
        alice.wait_for("talking to bob")
        yield alice, bob


def bodies(bob: SyncChatClient) -> list[str]:
    return [m.body for m in bob.read_messages().messages]


def test_alt_enter_makes_a_multi_line_message_that_arrives_intact(
    alice_and_bob: tuple[Terminal, SyncChatClient],
) -> None:
    alice, bob = alice_and_bob
    alice.child.send(f"first line{ALT_ENTER}second line{ALT_ENTER}third")
    alice.wait_for("bob> first line\nsecond line\nthird")  # still in the input
    assert bodies(bob) == []
    alice.type("")
    alice.wait_for("you → bob: first line\nsecond line\nthird")
    assert bodies(bob) == ["first line\nsecond line\nthird"]


def test_a_pasted_message_is_sent_whole_up_to_the_limit_and_refused_beyond_it(
    alice_and_bob: tuple[Terminal, SyncChatClient],
) -> None:
    alice, bob = alice_and_bob
    alice.paste("pasted one\npasted two")
    alice.type("")
    alice.wait_for("you → bob: pasted one\npasted two")
    alice.paste("y" * (BODY_LIMIT + 1))
    alice.type("")
    alice.wait_for("message too long: 65,537 bytes, the limit is 65,536; nothing sent")
    alice.paste("z" * BODY_LIMIT)
    alice.type("")
    received: list[str] = []  # a message taller than the pane is not drawn whole: ask bob
    wait_until(lambda: bool(received.extend(bodies(bob))) or len(received) == 2, "bob got both")
    assert received == ["pasted one\npasted two", "z" * BODY_LIMIT]


def test_history_is_private_per_account_and_keeps_no_message_text(tmp_path: Path) -> None:
    prefix = tmp_path / "history"
    (tmp_path / "history-alice").write_text("\n# old\n+/status\n")
    os.chmod(tmp_path / "history-alice", 0o644)
    with (
        chat_beside_cluster(tmp_path, 1, ["--history", str(prefix)]) as (cluster, terminal),
        SyncChatClient(cluster.addresses) as bob,
    ):
        bob.create_account("bob", PASSWORD)
        terminal.sign_up("alice", PASSWORD)
        terminal.type("/to bob")
        terminal.wait_for("talking to bob")
        terminal.type("a private line")
        terminal.wait_for("you → bob: a private line")
        terminal.type("/send bob another private line")
        terminal.wait_for("you → bob: another private line")
        terminal.type("/quit")
        assert terminal.exit_status() == 0
    kept = (tmp_path / "history-alice").read_text()
    entries = [line[1:] for line in kept.splitlines() if line.startswith("+")]
    assert entries == ["/status", "/to bob", "/send bob", "/quit"]
    assert "private" not in kept and PASSWORD not in kept
    assert stat.S_IMODE((tmp_path / "history-alice").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.glob("history*")) == ["history-alice"]
