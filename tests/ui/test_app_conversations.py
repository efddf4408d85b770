"""``chat`` in a real pty: conversations with their unread counts and bell, scrollback to
the first of 2,000 messages, a second device of the same user, and ending that device's
session, read from the screen as a person would (and checked on the server)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatnode.local_cluster import Cluster
from client.library import AuthError
from client.sync import SyncChatClient
from tests.support.chat_pty import alice_beside_bob, chat_beside_cluster
from tests.support.nodes import PASSWORD
from tests.support.terminal import (
    CTRL_N,
    CTRL_P,
    MOUSE_ON,
    PAGE_DOWN,
    PAGE_UP,
    WHEEL_DOWN,
    WHEEL_UP,
    Terminal,
    alt,
)
from tests.support.waits import wait_until

ROWS = 30


@pytest.fixture
def cluster_and_alice(tmp_path: Path) -> Iterator[tuple[Cluster, Terminal]]:
    """A one-node cluster where alice, bob and carol exist, and chat in a pty (not yet
    logged in)."""
    args = ["--history", str(tmp_path / "history")]
    with chat_beside_cluster(tmp_path, 1, args, rows=ROWS) as (cluster, terminal):
        with SyncChatClient(cluster.addresses) as client:
            for name in ("alice", "bob", "carol"):
                client.create_account(name, PASSWORD)
        yield cluster, terminal


def logged_in(cluster: Cluster, name: str, label: str = "") -> SyncChatClient:
    client = SyncChatClient(cluster.addresses)
    client.login(name, PASSWORD, label)
    return client


def unread_from(alice: SyncChatClient, partner: str) -> list[str]:
    """What alice has not read from partner, asked of the server (History marks nothing)."""
    page = alice.history(partner)
    return [m.body for m in page.messages if not m.read and m.sender == partner]


def page_until(terminal: Terminal, key: str, text: str) -> None:
    """Press key (PgUp or PgDn) until text is on the screen, each time until the pane moves.
    The pane does not move when it is at the top while older history is still coming:
    then the key is pressed again."""
    for _ in range(300):  # 2,000 one-row messages are about 75 pages of the pane
        if text in terminal.text():
            return
        before = terminal.text()
        terminal.child.send(key)
        terminal.wait_until(lambda now, was=before: now != was, "the pane moving", limit_s=2)
    pytest.fail(f"{text!r} never came into view:\n{terminal.text()}")


def test_conversations_count_unread_ring_and_mark_read_only_when_shown(
    cluster_and_alice: tuple[Cluster, Terminal],
) -> None:
    cluster, terminal = cluster_and_alice
    with (
        logged_in(cluster, "bob") as bob,
        logged_in(cluster, "carol") as carol,
        logged_in(cluster, "alice") as phone,
    ):
        bob.send_message("alice", "read long ago")
        phone.read_messages()
        bob.send_message("alice", "bob one")
        bob.send_message("alice", "bob two")
        carol.send_message("alice", "carol one")
        terminal.log_in("alice", PASSWORD)
        terminal.wait_for("logged in as alice: 3 unread")
        terminal.wait_for("─ 1:chat ─ 2:bob (2) ─ 3:carol (1) ─")
        assert terminal.screen.bells == 0  # unread before login: counted, no bell
        assert unread_from(phone, "bob") == ["bob two", "bob one"]

        terminal.child.send(alt("2"))
        terminal.wait_for("bob: read long ago\n──── new ────\n")
        terminal.wait_for("bob: bob one\n")
        terminal.wait_for("─ 1:chat ─ 2:bob ─ 3:carol (1) ─")
        wait_until(lambda: unread_from(phone, "bob") == [], "bob's messages read once shown")
        assert unread_from(phone, "carol") == ["carol one"]

        carol.send_message("alice", "carol two \x07\x1b[2J")  # a bell and 'clear screen'

        terminal.wait_for("3:carol (2)")
        assert terminal.screen.bells == 1
        assert "carol two" not in terminal.text()
        bob.send_message("alice", "bob live")  # into the open conversation: shown, no bell
        terminal.wait_for("bob: bob live")
        assert terminal.screen.bells == 1

        terminal.child.send(CTRL_N)
        terminal.wait_for("carol: carol two ^G^[[2J")  # drawn, not obeyed
        assert terminal.text().index("carol one") < terminal.text().index("carol two")
        assert terminal.screen.bells == 1 and "─ 1:chat ─" in terminal.text()
        terminal.wait_for("─ 1:chat ─ 2:bob ─ 3:carol ─")
        wait_until(lambda: unread_from(phone, "carol") == [], "carol's messages read")
        terminal.child.send(CTRL_P + CTRL_P)
        terminal.wait_until(lambda screen: "\n>\n" in screen, "the console's prompt")
        terminal.type("/close")  # the console cannot be closed
        terminal.wait_for("error: usage: /close leaves a conversation; this is the console")


def test_scrollback_reaches_the_first_of_2000_messages_and_stays_put_while_scrolled(
    cluster_and_alice: tuple[Cluster, Terminal],
) -> None:
    cluster, terminal = cluster_and_alice
    with logged_in(cluster, "alice") as phone, logged_in(cluster, "bob") as bob:
        for n in range(2000):
            phone.send_message("bob", f"message {n:04}")
        terminal.log_in("alice", PASSWORD)
        terminal.type("/to bob")
        terminal.wait_for("you → bob: message 1999")
        assert MOUSE_ON in terminal.output
        terminal.child.send(WHEEL_UP)  # three rows back: 'talking to bob', 1999 and 1998
        terminal.wait_until(lambda screen: "message 1999" not in screen, "the wheel scrolling")
        assert (
            "you → bob: message 1997\n─ 1:chat ─ 2:bob ─ scrolled back: PgDn ─" in terminal.text()
        )
        terminal.child.send(WHEEL_DOWN)
        terminal.wait_for("you → bob: message 1999")
        assert "scrolled back: PgDn" not in terminal.text()
        page_until(terminal, PAGE_UP, "message 0000")
        top = terminal.text()
        assert "message 0000" in top.partition("\n")[0]  # the very first row of the pane
        assert "you → bob: message 0001" in top and "message 1999" not in top

        bob.send_message("alice", "while scrolled back")
        wait_until(lambda: unread_from(phone, "bob") == [], "the new message shown, so read")
        assert terminal.drain().partition("\n")[0] == top.partition("\n")[0]  # not moved
        page_until(terminal, PAGE_DOWN, "bob: while scrolled back")
        terminal.wait_until(
            lambda screen: "scrolled back: PgDn" not in screen, "the pane at the bottom"
        )
        bob.send_message("alice", "at the bottom again")  # pinned: it comes into view
        terminal.wait_for("bob: at the bottom again")


def test_a_second_device_sees_the_conversation_and_one_device_ends_the_other(
    cluster_and_alice: tuple[Cluster, Terminal],
) -> None:
    cluster, terminal = cluster_and_alice
    with logged_in(cluster, "alice", "phone") as phone, logged_in(cluster, "bob") as bob:
        phone.send_message("bob", "sent from my phone")
        bob.send_message("alice", "bob replies")
        terminal.log_in("alice", PASSWORD)
        terminal.type("/to bob")
        terminal.wait_for("you → bob: sent from my phone")  # from history, below its unread
        assert terminal.text().index("you → bob: sent from my phone") < terminal.text().index(
            "bob: bob replies"
        )
        terminal.type("sent from the terminal")
        terminal.wait_for("you → bob: sent from the terminal")
        history = [m.body for m in phone.history("bob").messages]
        assert history == ["sent from the terminal", "bob replies", "sent from my phone"]

        terminal.type("/sessions")
        terminal.wait_for("2 session(s), newest first")
        terminal.wait_for("(this one)")
        (phone_id,) = re.findall(r"  ([0-9a-f]{8})  phone  since", terminal.text())
        (own_id,) = re.findall(r"  ([0-9a-f]{8})  chat on .*\(this one\)", terminal.text())
        terminal.type(f"/end-session {own_id}")
        terminal.wait_for("error: that is this session: /logout ends it")
        terminal.type("/end-session zz")
        terminal.wait_for("error: no session starts with zz; /sessions lists them")
        terminal.type(f"/end-session {phone_id}")
        terminal.wait_for(f"session {phone_id} (phone) ended")
        with pytest.raises(AuthError):
            phone.history("bob")
        terminal.type("/sessions")
        terminal.wait_for("1 session(s), newest first")


def test_no_bell_and_no_mouse_leave_the_terminal_alone(tmp_path: Path) -> None:
    args = ["--history", str(tmp_path / "history"), "--no-bell", "--no-mouse"]
    with alice_beside_bob(tmp_path, args) as (_, terminal, bob):
        bob.send_message("alice", "no bell for this")
        terminal.wait_for("─ 1:chat ─ 2:bob (1) ─")
        assert terminal.screen.bells == 0
        assert MOUSE_ON not in terminal.output
