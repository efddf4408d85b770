"""The app's conversations: one per partner, and the console for everything else.

Pure bookkeeping, no calls and no screen: the controller feeds in messages
(live, from a history page, or sent from here) and notes (command replies,
errors), and the view reads back each conversation's lines in order. A
message is kept by id, so one that arrives both live and in a history page
is shown once, and an older page slots in above what is already there.
Notes are anchored after the newest message of their moment, so they stay
where they were said when older history is loaded above them.
"""

from __future__ import annotations

import enum
import itertools
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from client.library import Message

CONSOLE = ""  # the conversation with nobody: command replies, notices and errors
CONSOLE_NAME = "chat"
MAX_MESSAGES = 20_000  # per conversation; the oldest are dropped (and can be fetched again)
MAX_NOTES = 2_000  # per conversation; the oldest are dropped
MAX_CONVERSATIONS = 100  # partners; beyond, the oldest is closed: a read one if any

Key = tuple[int, int, int]  # a line's place in its conversation, stable as lines are added
"""(message id, 0, 0) for a message; (id of the message before it, 1, n) for the n-th
note; the 'new' rule sorts just before its message."""


class Kind(enum.StrEnum):
    """What a line is, so the view can colour it."""

    INFO = "info"
    ERROR = "error"
    ECHO = "echo"
    INCOMING = "incoming"
    OUTGOING = "outgoing"
    PENDING = "pending"
    NEW = "new"


@dataclass(frozen=True, slots=True)
class Line:
    text: str
    kind: Kind = Kind.INFO


NEW_LINE = Line("──── new ────", Kind.NEW)


@dataclass
class Conversation:
    """One partner's messages in both directions, with the notes said while it was open.

    unread: incoming messages that arrived while it was not open (not yet shown).
    new_from: the first message that was unread when it was last opened; the 'new' rule
    is drawn before it. older: before_id for the next older history page; 0 when the
    first message is here; None until history was first loaded.
    """

    partner: str
    messages: dict[int, Message] = field(default_factory=dict)
    notes: list[tuple[Key, Line]] = field(default_factory=list)
    unread: set[int] = field(default_factory=set)
    new_from: int = 0
    older: int | None = None
    _counter: itertools.count[int] = field(default_factory=itertools.count, repr=False)
    _drawn: tuple[object, list[tuple[Key, Line]]] = field(default=(None, []), repr=False)
    _formatted: tuple[object, dict[int, Line]] = field(default=(None, {}), repr=False)

    @property
    def name(self) -> str:
        return self.partner or CONSOLE_NAME

    def add(self, messages: Iterable[Message]) -> None:
        """Messages from anywhere: a history page (however far back it was scrolled), the
        live stream, or sent from here."""
        self.messages.update((m.id, m) for m in messages)
        self._drawn = (None, [])

    def trim(self) -> None:
        """Keep the newest MAX_MESSAGES (called as new ones arrive, not as history loads,
        so scrolling back is never undone); the dropped ones can be fetched again."""
        if len(self.messages) > MAX_MESSAGES:
            kept = sorted(self.messages)[-MAX_MESSAGES:]
            self.messages = {i: self.messages[i] for i in kept}
            self.older = kept[0]
            self._drawn, self._formatted = (None, []), (None, {})

    def note(self, line: Line) -> None:
        self.notes.append(((max(self.messages, default=0), 1, next(self._counter)), line))
        del self.notes[:-MAX_NOTES]
        self._drawn = (None, [])

    def see(self, *, move_rule: bool = True) -> list[int]:
        """What was unread is shown now: returns it, for marking read, and (with move_rule)
        puts the 'new' rule before the first of it, or nowhere if there was none."""
        if move_rule:
            self.new_from = min(self.unread, default=0)
            self._drawn = (None, [])
        seen, self.unread = sorted(self.unread), set()
        return seen

    def forget(self, message_ids: Iterable[int]) -> None:
        for message_id in message_ids:
            self.messages.pop(message_id, None)
            self.unread.discard(message_id)
        self._drawn, self._formatted = (None, []), (None, {})

    def lines(self, username: str, today: time.struct_time) -> list[tuple[Key, Line]]:
        """Everything in order: messages by id, each note after the message it followed
        (kept until something changes: the pane asks on every redraw)."""
        drawn_for = (username, today[:3])
        if self._drawn[0] == drawn_for:
            return list(self._drawn[1])
        if self._formatted[0] != drawn_for:
            self._formatted = (drawn_for, {})
        formatted = self._formatted[1]
        keyed: list[tuple[Key, Line]] = [
            ((m.id, 0, 0), formatted.get(m.id) or _format(formatted, m, username, today))
            for m in self.messages.values()
        ]
        if self.new_from in self.messages:
            keyed.append(((self.new_from - 1, 2, 0), NEW_LINE))
        keyed.extend(self.notes)
        keyed.sort(key=lambda pair: pair[0])
        self._drawn = (drawn_for, keyed)
        return list(keyed)


class Conversations:
    """The console and each partner's conversation, in the order they were opened; one is
    open (shown) at a time."""

    def __init__(self) -> None:
        self._all: dict[str, Conversation] = {CONSOLE: Conversation(CONSOLE)}
        self.current = self._all[CONSOLE]

    def __iter__(self) -> Iterator[Conversation]:
        return iter(list(self._all.values()))

    def get(self, partner: str) -> Conversation:
        """partner's conversation, started (at the end of the list) if there is none."""
        if partner not in self._all:
            self._make_room()
            self._all[partner] = Conversation(partner)
        return self._all[partner]

    def _make_room(self) -> None:
        """Many strangers writing once must not grow the list (or memory) without end."""
        if len(self._all) - 1 < MAX_CONVERSATIONS:  # the console is not counted
            return
        closable = [c for c in self._all.values() if c.partner and c is not self.current]
        oldest = next((c for c in closable if not c.unread), closable[0])
        del self._all[oldest.partner]

    def open(self, partner: str) -> Conversation:
        """Make partner's conversation the one shown (the caller then calls its see())."""
        self.current = self.get(partner)
        return self.current

    def close(self, partner: str) -> None:
        """Drop partner's conversation from the list (it opens again with its history)."""
        if partner != CONSOLE:
            self._all.pop(partner, None)
            if self.current.partner == partner:
                self.current = self._all[CONSOLE]

    def partner_at(self, number: int) -> str | None:
        """The partner of the number-th conversation (1: the console), if there is one."""
        partners = list(self._all)
        return partners[number - 1] if 1 <= number <= len(partners) else None

    def partner_after(self, step: int) -> str:
        """The partner step places after (or, negative, before) the open one, round the list."""
        partners = list(self._all)
        return partners[(partners.index(self.current.partner) + step) % len(partners)]

    def receive(self, message: Message, username: str, *, shown: bool = False) -> Conversation:
        """File a message under its partner; unless shown elsewhere or that conversation is
        open, it is unread there (a message of one's own never is)."""
        partner = message.recipient if message.sender == username else message.sender
        conversation = self.get(partner)
        conversation.add([message])
        conversation.trim()
        if shown or conversation is self.current or message.sender == username:
            conversation.unread.discard(message.id)
        else:
            conversation.unread.add(message.id)
        return conversation

    def forget(self, message_ids: Iterable[int]) -> None:
        ids = set(message_ids)
        for conversation in self._all.values():
            conversation.forget(ids)


def _format(
    formatted: dict[int, Line], message: Message, username: str, today: time.struct_time
) -> Line:
    line = formatted[message.id] = message_line(message, username, today)
    return line


def message_line(message: Message, username: str, today: time.struct_time) -> Line:
    stamp = timestamp(message.sent_at_ms, today)
    if message.sender == username:
        return Line(
            f"#{message.id} {stamp} you → {message.recipient}: {message.body}", Kind.OUTGOING
        )
    return Line(f"#{message.id} {stamp} {message.sender}: {message.body}", Kind.INCOMING)


def timestamp(unix_ms: float, today: time.struct_time) -> str:
    """Local time; with the date unless it is today's."""
    local = time.localtime(unix_ms / 1000)
    if local[:3] == today[:3]:
        return time.strftime("%H:%M", local)
    return time.strftime("%Y-%m-%d %H:%M", local)
