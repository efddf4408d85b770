"""The ``chat`` app driven in-process: keys through a pipe, screen to DummyOutput.

Each test types into the real prompt_toolkit Application and waits (bounded,
on the controller's change notifications) for what the pane, the prompt or
the status bar should show; a second user acts through the client library.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatnode.server import ChatNode
from client import app
from client.library import AuthError, ChatClient
from tests.support.nodes import PASSWORD
from tests.support.screens import CTRL_C, CTRL_D, WAIT_S, Screen, open_screen


@pytest.fixture
def members(node: ChatNode) -> list[str]:
    return [node.config.address]


@pytest.fixture
async def screen(members: list[str], tmp_path: Path) -> AsyncIterator[Screen]:
    async with open_screen(members, tmp_path / "history") as opened:
        yield opened


@pytest.fixture
async def accounts(members: list[str]) -> AsyncIterator[dict[str, ChatClient]]:
    """alice, bob and carol exist; each has a logged-in library client here."""
    clients = {}
    for name in ("alice", "bob", "carol"):
        clients[name] = ChatClient(members)
        await clients[name].create_account(name, PASSWORD)
        await clients[name].login(name, PASSWORD)
    yield clients
    for client in clients.values():
        await client.close()


async def test_create_account_asks_for_the_password_twice(screen: Screen) -> None:
    await screen.answer("dora", "password for dora")
    assert screen.controller.question.secret
    await screen.answer(PASSWORD, "create account dora?")
    await screen.answer("y", "password again")
    await screen.answer("not the same", "password for dora")
    assert "the passwords differ" in screen.pane
    await screen.answer(PASSWORD, "create account dora?")
    await screen.answer("yes", "password again")
    await screen.answer(PASSWORD, ">")
    assert "account dora created" in screen.pane
    assert "logged in as dora: 0 unread" in screen.pane
    assert PASSWORD not in screen.pane


async def test_an_existing_name_asks_for_its_password_and_shows_unread(
    screen: Screen, accounts: dict[str, ChatClient]
) -> None:
    for body in ("first", "second", "third"):
        await accounts["bob"].send_message("alice", body)
    await screen.login("alice")
    assert "logged in as alice: 3 unread, counted by conversation below." in screen.pane
    await screen.until(lambda: screen.view.tabs_text() == "─ 1:chat ─ 2:bob (3) ")
    await screen.command("/read 2", "1 more unread: /read")
    assert screen.pane.index("bob: first") < screen.pane.index("bob: second")
    await screen.command("/read", "bob: third")
    await screen.command("/read", "no unread messages")


async def test_a_wrong_password_for_an_existing_name_creates_nothing(
    screen: Screen, accounts: dict[str, ChatClient]
) -> None:
    await screen.answer("alice", "password for alice")
    await screen.answer("wrong password!", "create account alice?")
    await screen.answer("y", "password again")
    await screen.answer("wrong password!", "password for alice")
    assert "alice exists, so the password was wrong" in screen.pane


async def test_send_and_receive_live_and_shown_messages_are_marked_read(
    screen: Screen, accounts: dict[str, ChatClient], members: list[str]
) -> None:
    await screen.login("alice")
    await screen.answer("/to bob", "bob>")
    await screen.command("hello bob", "you → bob: hello bob")
    unread = await accounts["bob"].read_messages()
    assert [m.body for m in unread.messages] == ["hello bob"]
    await accounts["bob"].send_message("alice", "live one")
    await screen.until_shown("bob: live one")
    await accounts["bob"].send_message("alice", "live two")
    await screen.until_shown("bob: live two")  # shown after 'live one' was marked read
    async with ChatClient(members) as second_session:
        await second_session.login("alice", PASSWORD)
        left = await second_session.read_messages()
    assert "live one" not in [m.body for m in left.messages]


async def test_send_to_anyone_and_errors_are_one_line(
    screen: Screen, accounts: dict[str, ChatClient]
) -> None:
    await screen.login("alice")
    await screen.command("just text", "error: usage: /to USER first, or /send USER TEXT")
    await screen.command("/send carol hi carol", "you → carol: hi carol")
    await screen.command("/send nobody hi", "error: no user named 'nobody'")
    await screen.command("/to nobody", "error: there is no user named nobody")
    await screen.command("/frobnicate", "error: unknown command /frobnicate")
    await screen.command("/read many", "error: usage: /read [N]")
    await screen.command("/delete", "error: usage: /delete IDS")
    errors = [line for line in screen.pane.splitlines() if line.startswith("error:")]
    assert len(errors) == 6 and not any("Traceback" in line for line in errors)


async def test_list_with_a_pattern_pages_through_more(
    screen: Screen, members: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("client.app_controller.LIST_PAGE_SIZE", 2)
    async with ChatClient(members) as client:
        for name in ("bea", "ben", "bill", "zed"):
            await client.create_account(name, PASSWORD)
    await screen.answer("zed", "password for zed")
    await screen.answer(PASSWORD, ">")
    await screen.command("/list b*", "bea  ben")
    await screen.command("/more", "bill")
    await screen.command("/more", "nothing more to list")
    await screen.command("/list q*", "no account matches 'q*'")


async def test_delete_messages_and_logout(screen: Screen, accounts: dict[str, ChatClient]) -> None:
    sent = await accounts["bob"].send_message("alice", "delete me")
    await screen.login("alice")
    await screen.command(f"/delete #{sent.message_id}, 999999", "deleted 1 of 2 message(s)")
    assert (await accounts["alice"].read_messages()).messages == ()
    await screen.answer("/logout", "username")
    assert "alice logged out" in screen.pane
    assert screen.view.status_text().startswith("not logged in")


async def test_delete_account_asks_for_the_password_and_returns_to_login(
    screen: Screen, accounts: dict[str, ChatClient], members: list[str]
) -> None:
    await screen.login("carol")
    await screen.answer("/delete-account", "password to delete carol")
    assert screen.controller.question.secret
    await screen.answer("", ">")
    assert "account kept" in screen.pane
    await screen.answer("/delete-account", "password to delete carol")
    await screen.command("wrong password!", "error: wrong password")
    assert screen.prompt == "> "
    await screen.answer("/delete-account", "password to delete carol")
    await screen.answer(PASSWORD, "username")
    assert "account carol deleted" in screen.pane
    async with ChatClient(members) as client:
        with pytest.raises(AuthError):
            await client.login("carol", PASSWORD)


async def test_the_status_bar_shows_user_node_leader_term_and_state(
    screen: Screen, accounts: dict[str, ChatClient], members: list[str]
) -> None:
    await screen.login("bob")
    expected = f"bob │ node {members[0]} │ leader 1 │ term 1 │ connected"
    await screen.until(lambda: screen.view.status_text() == expected)
    await screen.command("/status", "node 1 is leader, term 1, leader 1")
    assert f"1 {members[0]} leader in sync" in screen.pane


async def test_completion_of_commands_and_usernames(
    screen: Screen, accounts: dict[str, ChatClient]
) -> None:
    assert screen.controller.completions("/de") == [], "nothing to complete before login"
    await screen.login("alice")
    assert screen.controller.completions("/de") == ["/delete", "/delete-account"]
    assert screen.controller.completions("/to b") == ["bob"]
    assert screen.controller.completions("/send ") == ["alice", "bob", "carol"]
    assert screen.controller.completions("/read b") == []
    buffer = screen.view.input_field.buffer
    screen.pipe.send_text("/li")
    await screen.until(lambda: buffer.complete_state is not None)  # the menu is up
    screen.pipe.send_text("\t")
    await screen.until(lambda: buffer.text == "/list")


async def test_history_keeps_commands_per_account_never_names_passwords_or_messages(
    members: list[str], tmp_path: Path, accounts: dict[str, ChatClient]
) -> None:
    prefix = tmp_path / "history"
    async with open_screen(members, prefix) as screen:
        await screen.login("alice")
        await screen.answer("/to bob", "bob>")
        await screen.command("a secret line", "you → bob: a secret line")
        await screen.command("/send bob another secret", "you → bob: another secret")
        await screen.command("/help", "this list")
        screen.type("/quit")
        async with asyncio.timeout(WAIT_S):
            await screen.task
    async with open_screen(members, prefix, user="alice") as screen:
        assert screen.prompt == "password for alice: "
        await screen.answer(PASSWORD, ">")
        newest_first = screen.view.input_field.buffer.history.load_history_strings()
        assert list(newest_first) == ["/quit", "/help", "/send bob", "/to bob"]
    kept = (tmp_path / "history-alice").read_text()
    assert "secret" not in kept and "alice" not in kept and PASSWORD not in kept


@pytest.mark.parametrize("keys", [CTRL_C, CTRL_D, "/quit\r"], ids=["ctrl-c", "ctrl-d", "quit"])
async def test_ctrl_c_ctrl_d_and_quit_leave_cleanly(screen: Screen, keys: str) -> None:
    screen.pipe.send_text(keys)
    async with asyncio.timeout(WAIT_S):
        await screen.task


async def test_ctrl_d_with_text_typed_does_not_leave(screen: Screen) -> None:
    screen.pipe.send_text("ab\x02" + CTRL_D)  # Ctrl-B moves left, Ctrl-D deletes 'b'
    await screen.until(lambda: screen.view.input_field.text == "a")
    assert not screen.task.done()


def test_bad_usage_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        app.main(["--cluster", "not-an-address"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("chat: bad member address") and err.count("\n") == 1


async def test_no_terminal_exits_1_with_one_line(
    members: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--cluster", members[0], "--history", str(tmp_path / "h")]
    with pytest.raises(SystemExit) as exited:
        await asyncio.to_thread(app.main, argv)  # its own event loop, beside the node's
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("chat: standard input is not a terminal") and err.count("\n") == 1


async def test_conversations_open_switch_and_close(
    screen: Screen, accounts: dict[str, ChatClient]
) -> None:
    await screen.login("alice")
    await screen.answer("/to bob", "bob>")
    await screen.answer("/to carol", "carol>")
    assert screen.view.tabs_text() == "─ 1:chat ─ 2:bob ─ 3:carol "
    await screen.answer("/close", "> ")
    assert screen.view.tabs_text() == "─ 1:chat ─ 2:bob "
    screen.pipe.send_text("\x1b9")  # Alt-9: there is no ninth conversation
    screen.pipe.send_text("\x1b2")
    await screen.until(lambda: screen.prompt == "bob> ")
    assert "talking to bob" in screen.pane and "talking to carol" not in screen.pane


async def test_the_bar_keeps_the_open_conversation_in_view_when_tabs_overflow(
    screen: Screen, members: list[str], accounts: dict[str, ChatClient]
) -> None:
    names = [f"someone_with_a_long_name_{i}" for i in range(3)]  # 9 + 3 x 34 cells > 80
    async with ChatClient(members) as client:
        for name in names:
            await client.create_account(name, PASSWORD)
        await screen.login("alice")
        for name in names:
            await screen.answer(f"/to {name}", f"{name}>")
        bar = screen.view.tabs_text()
        assert bar.startswith("─ «") and f"─ 4:{names[2]} " in bar and len(bar) <= 80
        await client.login(names[2], PASSWORD)
        screen.pipe.send_text("\x1b1")  # Alt-1: the console, far from the newest tab
        await screen.until(lambda: screen.view.tabs_text().startswith("─ 1:chat "))
        await client.send_message("alice", "out of view")
        await screen.until(lambda: screen.view.tabs_text().endswith("» (1) "))
