"""The app's conversation bookkeeping (client/conversations.py) and the pane's wrapping
(client/pane.py), without a server or a screen."""

from __future__ import annotations

import time

import pytest

from client import conversations
from client.conversations import NEW_LINE, Conversations, Line, timestamp
from client.library import Message
from client.pane import wrap

TODAY = time.localtime(time.mktime((2026, 12, 7, 12, 0, 0, 0, 0, -1)))


def at(*date_and_time: int) -> int:
    """Unix ms of a local date and time."""
    return int(time.mktime((*date_and_time, 0, 0, 0, -1)) * 1000)


def message(id: int, sender: str = "bob", recipient: str = "alice", body: str = "") -> Message:
    return Message(id, sender, recipient, body or f"m{id}", at(2026, 12, 7, 9, id % 60), False)


def texts(all: Conversations, partner: str) -> list[str]:
    return [line.text for _, line in all.get(partner).lines("alice", TODAY)]


@pytest.mark.parametrize(
    ("sent", "shown"),
    [
        ((2026, 12, 7, 0, 0), "00:00"),
        ((2026, 12, 7, 23, 59), "23:59"),
        ((2026, 12, 6, 23, 59), "2026-12-06 23:59"),
        ((2026, 12, 8, 0, 1), "2026-12-08 00:01"),  # another machine's clock runs ahead
        ((2025, 12, 7, 12, 0), "2025-12-07 12:00"),  # the same day of another year
    ],
)
def test_a_timestamp_has_the_date_unless_it_is_today(sent: tuple[int, ...], shown: str) -> None:
    assert timestamp(at(*sent), TODAY) == shown


def test_messages_are_filed_by_partner_in_id_order_once_each() -> None:
    all = Conversations()
    all.receive(message(5), "alice")
    all.receive(message(9, "alice", "bob"), "alice")
    all.receive(message(7, "carol"), "alice")
    all.get("bob").add([message(3), message(5), message(9, "alice", "bob")])  # a history page
    assert texts(all, "bob") == ["#3 09:03 bob: m3", "#5 09:05 bob: m5", "#9 09:09 you → bob: m9"]
    assert [c.name for c in all] == ["chat", "bob", "carol"]
    assert all.get("bob").unread == {5} and all.get("carol").unread == {7}  # not one's own


def test_notes_stay_where_they_were_said_when_older_history_arrives() -> None:
    all = Conversations()
    bob = all.open("bob")
    all.receive(message(10), "alice")
    bob.note(Line("said after #10"))
    all.receive(message(11), "alice")
    bob.add([message(2), message(4)])
    assert texts(all, "bob") == [
        "#2 09:02 bob: m2",
        "#4 09:04 bob: m4",
        "#10 09:10 bob: m10",
        "said after #10",
        "#11 09:11 bob: m11",
    ]


def test_the_new_rule_goes_before_the_first_message_unread_when_opened() -> None:
    all = Conversations()
    for id in (3, 4, 8):
        all.receive(message(id), "alice")
    all.get("bob").add([message(1)])
    assert all.get("bob").unread == {3, 4, 8}
    bob = all.open("bob")
    assert bob.see() == [3, 4, 8] and bob.unread == set()
    assert texts(all, "bob") == [
        "#1 09:01 bob: m1",
        NEW_LINE.text,
        "#3 09:03 bob: m3",
        "#4 09:04 bob: m4",
        "#8 09:08 bob: m8",
    ]
    all.receive(message(12), "alice")  # while open: shown, so not unread
    assert bob.unread == set()
    all.open("")
    all.receive(message(13), "alice")
    all.open("bob")
    bob.see()
    assert texts(all, "bob").index(NEW_LINE.text) == 5  # now before #13
    all.open("bob")
    bob.see()
    assert NEW_LINE.text not in texts(all, "bob")  # nothing was new


def test_a_message_shown_elsewhere_is_not_unread() -> None:
    all = Conversations()
    all.receive(message(3), "alice")
    all.receive(message(3), "alice", shown=True)
    assert all.get("bob").unread == set()


def test_deleted_messages_leave_every_conversation() -> None:
    all = Conversations()
    all.receive(message(3), "alice")
    all.receive(message(4, "carol"), "alice")
    all.forget([3, 4, 99])
    assert texts(all, "bob") == [] and all.get("carol").unread == set()


def test_switching_goes_round_the_list_and_close_returns_to_the_console() -> None:
    all = Conversations()
    all.get("bob")
    all.get("carol")
    assert all.partner_at(1) == "" and all.partner_at(3) == "carol"
    assert all.partner_at(0) is None and all.partner_at(4) is None
    assert all.partner_after(-1) == "carol"
    all.open("carol")
    assert all.partner_after(1) == ""
    all.close("carol")
    assert all.current.partner == "" and [c.name for c in all] == ["chat", "bob"]
    all.close("")
    assert [c.name for c in all] == ["chat", "bob"]


def test_new_messages_keep_a_conversation_to_its_newest_and_history_is_kept_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(conversations, "MAX_MESSAGES", 3)
    monkeypatch.setattr(conversations, "MAX_NOTES", 2)
    bob = Conversations().get("bob")
    bob.older = 0
    bob.add([message(id) for id in (1, 2, 3, 4, 5)])  # history scrolled back: all kept
    assert sorted(bob.messages) == [1, 2, 3, 4, 5]
    all = Conversations()
    all.get("bob").add([message(id) for id in (1, 2, 3, 4)])
    all.receive(message(5), "alice")  # a new one: the oldest go
    assert sorted(all.get("bob").messages) == [3, 4, 5] and all.get("bob").older == 3
    for n in range(4):
        bob.note(Line(f"note {n}"))
    assert [line.text for _, line in bob.notes] == ["note 2", "note 3"]


@pytest.mark.parametrize(
    ("text", "width", "rows"),
    [
        ("", 10, [""]),
        ("short", 10, ["short"]),
        ("exactly10!", 10, ["exactly10!"]),
        ("eleven cha", 5, ["eleve", "n cha"]),
        ("hello big world", 10, ["hello big", "world"]),
        ("hello big world", 9, ["hello big", "world"]),
        ("a verylongword", 5, ["a", "veryl", "ongwo", "rd"]),
        ("one\ntwo\n", 10, ["one", "two", ""]),
        ("日本語テキスト", 5, ["日本", "語テ", "キス", "ト"]),  # two cells each
        ("a\x1bb", 2, ["a", "\x1b", "b"]),  # a control character is drawn as ^[
        ("語", 1, ["語"]),  # wider than the row: alone on it
    ],
)
def test_wrap_cuts_rows_at_newlines_spaces_and_the_width_in_cells(
    text: str, width: int, rows: list[str]
) -> None:
    assert wrap(text, width) == tuple(rows)


def test_many_partners_close_the_oldest_conversation_a_read_one_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(conversations, "MAX_CONVERSATIONS", 3)
    all = Conversations()
    all.receive(message(1, "ann"), "alice")
    all.open("bea")
    all.receive(message(2, "cid"), "alice")
    all.receive(message(3, "dan"), "alice")  # the others are unread or open: the oldest goes
    assert [c.name for c in all] == ["chat", "bea", "cid", "dan"]
    all.open("")
    all.receive(message(4, "eve"), "alice")  # bea was read
    assert [c.name for c in all] == ["chat", "cid", "dan", "eve"]
