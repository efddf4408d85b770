"""The ``chat`` app without a screen: typed lines in; lines, a prompt and a status out.

Everything the app decides lives here, so tests can drive it with plain
strings; :mod:`client.app` only draws :meth:`Controller.pane_lines` (the open
conversation, kept in step with the cluster by :class:`client.feed.Feed`),
:meth:`Controller.tabs`, the current :class:`Question` and
:meth:`Controller.status_text`, and feeds typed lines and keys back. The input
line always answers one question: a login step, a password, or (once logged
in) the chat prompt, where plain text goes to the open conversation's partner
and ``/commands`` do the rest.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from client.conversations import Key, Kind, Line, message_line, timestamp
from client.feed import Feed
from client.library import (
    AlreadyExists,
    AuthError,
    ChatClient,
    ChatError,
    ClientState,
    InvalidArgument,
    LoginReply,
    Message,
    Sent,
    SessionInfo,
)
from client.outage import DOWN, NOT_ANSWERING, Outage, patiently
from client.outbox import Outbox, Pending
from client.tab_bar import Tab
from proto.limits import BODY_MAX_BYTES, CLIENT_LABEL_MAX_CHARS

T = TypeVar("T")

LIST_PAGE_SIZE = 50
KNOWN_USERS_FETCH = 1000  # usernames loaded at login for completion
PENDING_KEY = 1 << 62  # sorts the outbox after every line of a conversation
SESSION_ID_SHOWN = 8  # hex digits of a session id that /sessions shows and /end-session takes


@dataclass(frozen=True, slots=True)
class Question:
    """What the input line asks for and who takes the answer.

    secret: hide the typing; remember: the answer may go to the history file
    (only chat-prompt commands, see :meth:`Controller.history_entry`; never
    names, passwords or yes/no answers).
    """

    prompt: str
    answer: Callable[[str], Awaitable[None]]
    secret: bool = False
    remember: bool = False


@dataclass(frozen=True, slots=True)
class Command:
    usage: str
    help: str
    run: Callable[[Controller, str], Awaitable[None]]
    takes_user: bool = False
    offline: bool = False  # works while the cluster does not answer (queues or is local)


class UsageError(Exception):
    """A command was typed wrong; the message says how to type it."""


class Controller:
    """The app's state and behaviour, driven by :meth:`submit` (or :meth:`feed` + :meth:`run`)."""

    def __init__(self, client: ChatClient, username: str = "") -> None:
        self.client = client
        self.revision = 0  # counts visible changes, so the view can cache what it drew
        self.finished = False
        self._preset_user = username
        self._name = ""  # the name being logged in or created
        self._password = ""  # kept only between 'create?' and 'password again'
        self._known_users: set[str] = set()
        self._more: tuple[str, str] | None = None  # (pattern, page token) for /more
        self._contact: asyncio.Task[None] | None = None
        self._inbox: asyncio.Queue[str] = asyncio.Queue()
        self._listeners: list[Callable[[], None]] = []
        self.live = Feed(client, self._changed, self._reporting, self._error)
        self._outage = Outage(self._changed, lambda: self._say("resumed"))
        self._outbox = Outbox(client, self._delivered, self._refused)
        client.add_state_listener(self._state_changed)
        self.question: Question
        self._start_login()
        self._say("Welcome to chat. /quit or Ctrl-D leaves at any time.")

    # -- what the view reads ----------------------------------------------------------

    def status_text(self) -> str:
        state = self.client.state
        return " │ ".join(
            [
                self.client.username or "not logged in",
                f"node {state.address or '-'}",
                f"leader {state.leader_id or '-'}",
                f"term {state.term or '-'}",
                self._outage.label() or state.connection,
            ]
        )

    @property
    def partner(self) -> str:
        """Whom the open conversation is with ('' for the console)."""
        return self.live.conversations.current.partner

    def pane_lines(self) -> list[tuple[Key, Line]]:
        """The open conversation in order, then the outbox until each message is sent."""
        today = time.localtime()
        lines = self.live.conversations.current.lines(self.client.username, today)
        lines.extend(
            ((PENDING_KEY, 0, n), Line(f"… to {p.recipient} (pending): {p.body}", Kind.PENDING))
            for n, p in enumerate(self._outbox.pending)
        )
        return lines

    def tabs(self) -> list[Tab]:
        """Each conversation's tab, numbered from 1, the console first."""
        conversations = self.live.conversations
        return [
            Tab(number, c.name, len(c.unread), c is conversations.current)
            for number, c in enumerate(conversations, 1)
        ]

    def open_number(self, number: int) -> None:
        """Open the number-th conversation of :meth:`tabs` (1: the console), if there is one."""
        partner = self.live.conversations.partner_at(number)
        if partner is not None:
            self._switch(partner)

    def open_next(self, step: int) -> None:
        """Open the conversation step places after (negative: before) the open one."""
        self._switch(self.live.conversations.partner_after(step))

    def load_older(self) -> None:
        """Fetch the open conversation's next older page, unless it is all here or coming."""
        if self._chatting:
            self.live.load_older()

    def history_entry(self, text: str) -> str | None:
        """What the history file keeps of a chat-prompt line: commands, never message text.

        Plain lines are messages and are not kept; /send keeps its recipient only."""
        if not text.startswith("/"):
            return None
        name, _, rest = text.partition(" ")
        return f"{name} {rest.split(' ')[0]}".rstrip() if name == "/send" else text

    def completions(self, text: str) -> list[str]:
        """Whole-word candidates for the last word of text: commands, then usernames."""
        if not self.question.remember:
            return []
        words = text.split(" ")
        if len(words) == 1 and text.startswith("/"):
            return [f"/{name}" for name in COMMANDS if f"/{name}".startswith(text)]
        command = COMMANDS.get(words[0][1:]) if words[0].startswith("/") else None
        if len(words) == 2 and command is not None and command.takes_user:
            partners = {c.partner for c in self.live.conversations if c.partner}
            return sorted(u for u in self._known_users | partners if u.startswith(words[1]))
        return []

    def report(self, text: str) -> None:
        """One error line from the view (a history file it could not open)."""
        self._error(text)

    def add_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call listener after anything visible changed; returns the remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    # -- input ------------------------------------------------------------------------

    def feed(self, text: str) -> None:
        """Queue a typed line; :meth:`run` answers lines one at a time, in order."""
        self._inbox.put_nowait(text)

    async def run(self) -> None:
        """Answer fed lines until /quit; meanwhile, reach the cluster once to show its state."""
        self._contact = asyncio.create_task(self._first_contact())
        while not self.finished:
            await self.submit(await self._inbox.get())

    async def submit(self, text: str) -> None:
        """Answer the current question with text; every failure becomes one line."""
        question = self.question
        if not question.remember:
            self._echo(question.prompt + ("" if question.secret else text))
        if text.strip() == "/quit" and not question.secret:  # leave from any prompt
            await self._reporting(self.cmd_quit(""))
        else:
            await self._reporting(question.answer(text))

    async def _reporting(self, work: Awaitable[None]) -> None:
        """Await work; every failure becomes one line."""
        try:
            await work
        except UsageError as exc:
            self._error(f"usage: {exc}")
        except NOT_ANSWERING:
            self._error("not done: the cluster stopped answering; try again once it resumes")
        except ChatError as exc:
            self._error(str(exc))
        except Exception as exc:  # a bug, but the screen gets one line, never a traceback
            self._error(f"unexpected {type(exc).__name__}: {exc}")
        finally:
            self._changed()

    async def close(self) -> None:
        """Stop live delivery, the outbox and the outage clock (the client is the caller's)."""
        if self._contact is not None:
            self._contact.cancel()
        self._outage.stop()
        await self.live.stop()
        await self._outbox.close()

    # -- the cluster's state ----------------------------------------------------------

    def _state_changed(self, state: ClientState) -> None:
        self._outage.note(state)
        self._changed()

    async def _first_contact(self) -> None:
        """Ask the cluster for its status until it answers, so that an app started during
        an outage shows 'reconnecting…' (and then 'resumed') before anyone logs in."""
        await patiently(self.client.cluster_status)

    async def _patiently(self, call: Callable[[], Awaitable[T]], waiting: str) -> T:
        return await patiently(call, lambda: self._say(waiting))

    # -- login and account creation ---------------------------------------------------

    def _start_login(self) -> None:
        if self._preset_user:
            self._name = self._preset_user
            self._ask_password()
        else:
            self._ask("username: ", self._got_username)

    def _ask_password(self) -> None:
        self._ask(f"password for {self._name}: ", self._got_password, secret=True)

    async def _got_username(self, text: str) -> None:
        self._name = text.strip()
        if self._name:
            self._ask_password()

    async def _got_password(self, password: str) -> None:
        try:
            session = await self._login(password)
        except AuthError:
            self._say(f"wrong password, or there is no account named {self._name}")
            self._password = password
            self._ask(f"create account {self._name}? [y/N] ", self._got_create_choice)
            return
        except InvalidArgument as exc:
            self._error(str(exc))
            self._start_login()
            return
        await self._enter(session)

    async def _got_create_choice(self, text: str) -> None:
        if text.strip().lower() in ("y", "yes"):
            self._ask("password again: ", self._got_password_again, secret=True)
        else:
            self._password = ""
            self._start_login()

    async def _got_password_again(self, again: str) -> None:
        password, self._password = self._password, ""
        if again != password:
            self._error("the passwords differ; start again")
            self._ask_password()
            return
        try:
            await self._patiently(
                lambda: self.client.create_account(self._name, password),
                f"waiting for the cluster to create {self._name}…",
            )
        except AlreadyExists:
            self._error(f"{self._name} exists, so the password was wrong")
            self._ask_password()
            return
        except InvalidArgument as exc:
            self._error(str(exc))
            self._start_login()
            return
        self._say(f"account {self._name} created")
        await self._enter(await self._login(password))

    async def _login(self, password: str) -> LoginReply:
        name = self._name
        waiting = f"waiting for the cluster to log in as {name}…"
        label = f"chat on {socket.gethostname()}"[:CLIENT_LABEL_MAX_CHARS]
        return await self._patiently(lambda: self.client.login(name, password, label), waiting)

    async def _enter(self, session: LoginReply) -> None:
        unread = session.unread_count
        hint = ", counted by conversation below" if unread else ""
        self._say(f"logged in as {session.username}: {unread} unread{hint}. /help lists commands.")
        self.live.start(session)
        try:
            page = await self.client.list_accounts(page_size=KNOWN_USERS_FETCH)
            self._remember_users(page.usernames)  # for completion
        finally:
            self._ask_chat()  # logged in, even if the names could not be fetched

    async def _leave_session(self) -> None:
        await self.live.stop()
        unsent = await self._outbox.close()
        self._more = None
        if unsent:
            self._error(f"{len(unsent)} pending message(s) dropped; they may not have been sent")
        self._start_login()

    # -- the chat prompt --------------------------------------------------------------

    def _ask_chat(self) -> None:
        self._ask(f"{self.partner}> ", self._chat_line, remember=True)

    async def _chat_line(self, text: str) -> None:
        if not text.strip():
            return
        if not text.startswith("/"):
            if not self.partner:
                raise UsageError("/to USER first, or /send USER TEXT")
            self._send(self.partner, text)
            return
        self._echo(f"> {text}")
        name, _, rest = text[1:].partition(" ")
        command = COMMANDS.get(name)
        if command is None:
            self._error(f"unknown command /{name}; /help lists them")
            return
        if self.client.state.connection in DOWN and not command.offline:
            self._error(f"/{name} needs the cluster: try again once it resumes")
            return
        await command.run(self, rest.strip())

    def _send(self, recipient: str, body: str) -> None:
        """Queue body for recipient (shown as pending until the cluster takes it)."""
        size = len(body.encode())
        if size > BODY_MAX_BYTES:
            self._error(
                f"message too long: {size:,} bytes, the limit is {BODY_MAX_BYTES:,}; nothing sent"
            )
            return
        self._outbox.add(recipient, body)
        self._changed()

    def _delivered(self, pending: Pending, sent: Sent) -> None:
        """File the message under its conversation; said here too if that one is not open."""
        me = self.client.username
        message = Message(
            sent.message_id, me, pending.recipient, pending.body, int(time.time() * 1000), True
        )
        conversations = self.live.conversations
        if conversations.receive(message, me) is not conversations.current:
            self._add(message_line(message, me, time.localtime()))
        self._changed()
        if not sent.recipient_online:
            self._say(f"{pending.recipient} is offline and will see it later")

    def _refused(self, pending: Pending, error: ChatError) -> None:
        self._error(f"{error} (not sent to {pending.recipient}: {_preview(pending.body)})")

    async def cmd_to(self, rest: str) -> None:
        if not rest:
            self._say(f"talking to {self.partner}" if self.partner else "talking to nobody yet")
            return
        page = await self.client.list_accounts(rest, page_size=1)
        if rest not in page.usernames:
            self._error(f"there is no user named {rest}")
            return
        self._remember_users([rest])
        opening = self.live.open(rest)
        self._ask_chat()
        await opening
        self._say(f"talking to {rest}: plain lines go to them")

    async def cmd_close(self, rest: str) -> None:
        if not self.partner:
            raise UsageError("/close leaves a conversation; this is the console")
        self.live.conversations.close(self.partner)
        self._ask_chat()

    async def cmd_send(self, rest: str) -> None:
        recipient, _, body = rest.partition(" ")
        if not (recipient and body):
            raise UsageError(COMMANDS["send"].usage)
        self._send(recipient, body)

    async def cmd_list(self, rest: str) -> None:
        await self._list_page(rest, "")

    async def cmd_more(self, rest: str) -> None:
        if self._more is None:
            self._say("nothing more to list")
            return
        await self._list_page(*self._more)

    async def _list_page(self, pattern: str, token: str) -> None:
        page = await self.client.list_accounts(pattern, LIST_PAGE_SIZE, token)
        self._remember_users(page.usernames)
        self._more = (pattern, page.next_page_token) if page.next_page_token else None
        if not page.usernames:
            self._say(f"no account matches {pattern!r}")
            return
        self._say("  ".join(page.usernames))
        if self._more:
            self._say("more: /more")

    async def cmd_read(self, rest: str) -> None:
        limit = _positive_int(rest, COMMANDS["read"].usage) if rest else 0
        unread = await self.client.read_messages(limit)
        me, conversations = self.client.username, self.live.conversations
        for message in unread.messages:
            self._remember_users([message.sender])
            if conversations.receive(message, me, shown=True) is not conversations.current:
                self._add(message_line(message, me, time.localtime()))
        if not unread.messages:
            self._say("no unread messages")
        elif unread.remaining:
            self._say(f"{unread.remaining} more unread: /read")

    async def cmd_delete(self, rest: str) -> None:
        words = rest.replace(",", " ").split()
        if not words:
            raise UsageError(COMMANDS["delete"].usage)
        ids = [_positive_int(w.removeprefix("#"), COMMANDS["delete"].usage) for w in words]
        deleted = await self.client.delete_messages(ids)
        self.live.conversations.forget(ids)
        self._say(f"deleted {deleted} of {len(ids)} message(s)")

    async def cmd_logout(self, rest: str) -> None:
        name = self.client.username
        try:
            await self.client.logout()
        finally:
            await self._leave_session()
        self._say(f"{name} logged out")

    async def cmd_delete_account(self, rest: str) -> None:
        prompt = f"password to delete {self.client.username} for good (empty: cancel): "
        self._ask(prompt, self._got_delete_password, secret=True)

    async def _got_delete_password(self, password: str) -> None:
        name = self.client.username
        self._ask_chat()  # whatever happens next, a failure leaves us chatting
        if not password:
            self._say("account kept")
            return
        await self.client.delete_account(password)
        await self._leave_session()
        self._say(f"account {name} deleted")

    async def cmd_status(self, rest: str) -> None:
        status = await self.client.cluster_status()
        self._say(
            f"node {status.node_id} is {status.role}, term {status.term}, "
            f"leader {status.leader_id or '-'}, commit {status.commit_index}"
        )
        for member in status.members:
            sync = "in sync" if member.in_sync else "out of sync"
            reach = "" if member.reachable else ", unreachable"
            self._say(f"  {member.id} {member.address} {member.role or '-'} {sync}{reach}")

    async def cmd_sessions(self, rest: str) -> None:
        sessions = await self.client.list_sessions()
        today = time.localtime()
        self._say(f"{len(sessions)} session(s), newest first; /end-session ID ends one:")
        for info in sessions:
            this = "  (this one)" if info.current else ""
            self._say(
                f"  {info.session_id[:SESSION_ID_SHOWN]}  {info.client_label or '-'}  "
                f"since {timestamp(info.created_ms, today)}, "
                f"last used {timestamp(info.last_used_ms, today)}{this}"
            )

    async def cmd_end_session(self, rest: str) -> None:
        if not rest:
            raise UsageError(COMMANDS["end-session"].usage)
        sessions = await self.client.list_sessions()
        matches = [s for s in sessions if s.session_id.startswith(rest.lower())]
        if len(matches) != 1:
            which = "no session" if not matches else "more than one session"
            self._error(f"{which} starts with {rest}; /sessions lists them")
            return
        (info,) = matches
        if info.current:
            self._error("that is this session: /logout ends it")
            return
        await self.client.end_session(info.session_id)
        self._say(f"session {info.session_id[:SESSION_ID_SHOWN]} ({_label(info)}) ended")

    async def cmd_help(self, rest: str) -> None:
        width = max(len(c.usage) for c in COMMANDS.values())
        self._say("plain text goes to the current partner (/to USER); commands:")
        for command in COMMANDS.values():
            self._say(f"  {command.usage.ljust(width)}  {command.help}")

    async def cmd_quit(self, rest: str) -> None:
        await self.live.stop()
        self.finished = True

    # -- conversations ----------------------------------------------------------------

    @property
    def _chatting(self) -> bool:
        return self.question.remember  # the chat prompt: logged in, no question pending

    def _switch(self, partner: str) -> None:
        if self._chatting and partner != self.partner:
            self.live.open_later(partner)
            self._ask_chat()

    # -- output -----------------------------------------------------------------------

    def _say(self, text: str) -> None:
        self._add(Line(text))

    def _echo(self, text: str) -> None:
        self._add(Line(text, Kind.ECHO))

    def _error(self, text: str) -> None:
        self._add(Line(f"error: {text}", Kind.ERROR))

    def _add(self, line: Line) -> None:
        self.live.conversations.current.note(line)
        self._changed()

    def _changed(self) -> None:
        self.revision += 1
        for listener in list(self._listeners):
            listener()

    def _ask(
        self,
        prompt: str,
        answer: Callable[[str], Awaitable[None]],
        *,
        secret: bool = False,
        remember: bool = False,
    ) -> None:
        self.question = Question(prompt, answer, secret, remember)
        self._changed()

    def _remember_users(self, names: Iterable[str]) -> None:
        self._known_users.update(names)


def _positive_int(text: str, usage: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise UsageError(usage)
    return int(text)


def _preview(body: str, width: int = 30) -> str:
    """The start of a message, on one line, for an error about it."""
    flat = " ".join(body.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _label(info: SessionInfo) -> str:
    return info.client_label or "no label"


COMMANDS: dict[str, Command] = {
    "to": Command("/to USER", "open the conversation with USER", Controller.cmd_to, True),
    "close": Command("/close", "close this conversation", Controller.cmd_close, offline=True),
    "send": Command(
        "/send USER TEXT", "send one message to USER", Controller.cmd_send, True, offline=True
    ),
    "list": Command("/list [PATTERN]", "list accounts, e.g. /list a*", Controller.cmd_list, True),
    "more": Command("/more", "the next page of /list", Controller.cmd_more),
    "read": Command("/read [N]", "show N unread messages, oldest first", Controller.cmd_read),
    "delete": Command("/delete IDS", "delete messages by id: /delete 4 7", Controller.cmd_delete),
    "logout": Command("/logout", "end this session", Controller.cmd_logout),
    "delete-account": Command(
        "/delete-account", "delete your account and its messages", Controller.cmd_delete_account
    ),
    "sessions": Command("/sessions", "where you are logged in", Controller.cmd_sessions),
    "end-session": Command(
        "/end-session ID", "log out another device (ID from /sessions)", Controller.cmd_end_session
    ),
    "status": Command("/status", "show the cluster's members", Controller.cmd_status),
    "help": Command("/help", "this list", Controller.cmd_help, offline=True),
    "quit": Command("/quit", "leave (or Ctrl-D, Ctrl-C)", Controller.cmd_quit, offline=True),
}
