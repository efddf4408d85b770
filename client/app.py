"""``chat``: the full-screen terminal client (docs/api.md, "chat").

A thin prompt_toolkit view over :class:`client.app_controller.Controller`:
the message pane (:mod:`client.pane`) draws the open conversation and then
the outbox; the rule under it lists the conversations with their unread
counts; the input line answers the controller's current question (masked for
passwords, with completion, a private history file of commands per account,
Alt-Enter for a new line and bracketed paste); and the bottom bar shows user,
node, leader, term and connection state. Everything is redrawn whenever the
controller or the client changes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import grpc

try:
    import prompt_toolkit  # noqa: F401  (the client extra; server nodes install without it)
except ModuleNotFoundError:
    sys.exit("chat: the terminal client needs prompt_toolkit: pip install 'leased-chat[client]'")
from prompt_toolkit.application import Application
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.filters import Condition
from prompt_toolkit.formatted_text import StyleAndTextTuples, fragment_list_to_text
from prompt_toolkit.history import History, InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.keys import Keys
from prompt_toolkit.layout import Dimension, Float, FloatContainer, HSplit, Layout, Window
from prompt_toolkit.layout.controls import FormattedTextControl
from prompt_toolkit.layout.menus import CompletionsMenu
from prompt_toolkit.output import Output
from prompt_toolkit.styles import Style
from prompt_toolkit.utils import get_cwidth
from prompt_toolkit.widgets import TextArea

from client.app_controller import Controller
from client.cli import add_cluster_flag, add_tls_flags, tls_from_args, user_data_dir
from client.history_file import DIR_MODE, history_path, open_private_history
from client.library import ChatClient, RetryPolicy
from client.pane import MessagePane
from client.tab_bar import RULE, fit, marker_text, tab_text
from proto.cli import Parser, add_version_flag, member_addresses

STYLE = Style.from_dict(
    {
        "info": "ansicyan",
        "error": "ansired bold",
        "echo": "ansibrightblack",
        "incoming": "",
        "outgoing": "ansigreen",
        "pending": "ansibrightblack italic",
        "rule": "ansibrightblack",
        "new": "ansiyellow",
        "tab": "ansibrightblack",
        "tab.open": "reverse",
        "tab.unread": "ansiyellow bold",
        "status": "reverse",
    }
)


class _ControllerCompleter(Completer):
    """prompt_toolkit's completion protocol over Controller.completions."""

    def __init__(self, controller: Controller) -> None:
        self._controller = controller

    def get_completions(self, document: Document, event: CompleteEvent) -> Iterable[Completion]:
        word = document.text_before_cursor.rpartition(" ")[2]
        for candidate in self._controller.completions(document.text_before_cursor):
            yield Completion(candidate, start_position=-len(word))


INPUT_ROWS = 8  # the input grows with a multi-line message up to this, then scrolls


class ChatView:
    """The screen: message pane, conversations, input line, status bar; exits on /quit,
    Ctrl-C or Ctrl-D.

    history_prefix names the history files: PREFIX-USERNAME for each account
    (see :mod:`client.history_file`); nothing is kept before a login. bell: ring the
    terminal's bell for a message in a conversation that is not open. mouse: the wheel
    scrolls the pane (the terminal then selects text only with Shift held).
    """

    def __init__(
        self,
        controller: Controller,
        history_prefix: str | Path,
        *,
        bell: bool = True,
        mouse: bool = True,
        input: Input | None = None,
        output: Output | None = None,
    ) -> None:
        self.controller = controller
        self._history_prefix = history_prefix
        self._history_user = ""
        self.input_field = TextArea(
            multiline=True,
            height=Dimension(min=1, max=INPUT_ROWS),
            dont_extend_height=True,
            password=Condition(lambda: controller.question.secret),
            prompt=lambda: controller.question.prompt,
            completer=_ControllerCompleter(controller),
            history=InMemoryHistory(),
            accept_handler=self._accept,
        )
        self.pane = MessagePane(controller)
        tabs = FormattedTextControl(self._tab_fragments)
        status = FormattedTextControl(self._status_fragments)
        body = HSplit(
            [
                Window(self.pane),
                Window(tabs, height=1, char="─", style="class:rule"),
                self.input_field,
                Window(status, height=1, style="class:status"),
            ]
        )
        menu = Float(xcursor=True, ycursor=True, content=CompletionsMenu(max_height=8))
        self.application: Application[None] = Application(
            layout=Layout(FloatContainer(body, [menu]), focused_element=self.input_field),
            key_bindings=self._key_bindings(),
            style=STYLE,
            full_screen=True,
            mouse_support=mouse,
            input=input,
            output=output,
        )
        controller.add_listener(self.application.invalidate)
        controller.add_listener(self._follow_account)
        if bell:
            controller.live.add_bell_listener(self.application.output.bell)

    async def run(self) -> None:
        """Show the screen until the user leaves."""
        await self.application.run_async(
            pre_run=lambda: self.application.create_background_task(self._answer_lines())
        )

    def status_text(self) -> str:
        """The bottom bar exactly as drawn."""
        return fragment_list_to_text(self._status_fragments()).strip()

    def pane_text(self) -> str:
        """Every line of the open conversation, scrolled into view or not."""
        return "".join(f"{line.text}\n" for _, line in self.controller.pane_lines())

    def tabs_text(self) -> str:
        """The conversations as the rule under the pane lists them."""
        return fragment_list_to_text(self._tab_fragments())

    async def _answer_lines(self) -> None:
        await self.controller.run()
        self.application.exit()

    def _accept(self, buffer: Buffer) -> bool:
        """Hand the text over; leave in the buffer only what the history may keep (an empty
        buffer is not added to it: no names, passwords or message text)."""
        text = buffer.text
        entry = self.controller.history_entry(text) if self.controller.question.remember else None
        buffer.reset(Document(entry or ""))
        self.controller.feed(text)
        return False

    def _follow_account(self) -> None:
        """Switch to the logged-in account's own history file (none while logged out)."""
        username = self.controller.client.username
        if username == self._history_user:
            return
        self._history_user = username
        buffer = self.input_field.buffer
        buffer.history = self._account_history(username)
        buffer.reset(buffer.document)  # reloads the history from the new file, keeps the typing

    def _account_history(self, username: str) -> History:
        if not username:
            return InMemoryHistory()
        path = history_path(self._history_prefix, username)
        try:
            return open_private_history(path)
        except OSError as exc:
            self.controller.report(f"no input history: {exc}")
            return InMemoryHistory()

    def _status_fragments(self) -> StyleAndTextTuples:
        return [("class:status", f" {self.controller.status_text()} ")]

    def _tab_fragments(self) -> StyleAndTextTuples:
        """─ 1:chat ─ 2:bob (3) ─ …, the open one reversed, as many as the width holds
        (:mod:`client.tab_bar`); shown once logged in."""
        if not self.controller.client.username:
            return []
        scrolled = _marked("class:tab.unread", "scrolled back: PgDn")
        suffix = scrolled if self.pane.scrolled_back else []
        columns = self.application.output.get_size().columns
        bar = fit(self.controller.tabs(), columns - get_cwidth(fragment_list_to_text(suffix)))
        fragments: StyleAndTextTuples = []
        if bar.before is not None:
            fragments += _marked(_hidden_style(bar.before), marker_text(bar.before, before=True))
        for tab in bar.tabs:
            label, unread = tab_text(tab)
            style = "class:tab.open" if tab.is_open else "class:tab"
            fragments += [("class:rule", RULE), (style, label)]
            fragments += [("class:tab.unread", unread)] if unread else []
            fragments.append(("class:rule", " "))
        if bar.after is not None:
            fragments += _marked(_hidden_style(bar.after), marker_text(bar.after, before=False))
        return fragments + suffix

    def _key_bindings(self) -> KeyBindings:
        bindings = KeyBindings()
        empty = Condition(lambda: not self.input_field.text)

        @bindings.add("c-c")
        @bindings.add(Keys.SIGINT)
        @bindings.add("c-d", filter=empty)
        def _leave(event: KeyPressEvent) -> None:
            event.app.exit()

        @bindings.add("enter")
        def _send(event: KeyPressEvent) -> None:
            self.input_field.buffer.validate_and_handle()

        @bindings.add("escape", "enter")  # Alt-Enter, or Esc then Enter
        def _new_line(event: KeyPressEvent) -> None:
            self.input_field.buffer.insert_text("\n")

        @bindings.add("pageup")
        def _page_back(event: KeyPressEvent) -> None:
            self.pane.page(1)

        @bindings.add("pagedown")
        def _page_forward(event: KeyPressEvent) -> None:
            self.pane.page(-1)

        @bindings.add("c-n")
        def _next(event: KeyPressEvent) -> None:
            self.controller.open_next(1)

        @bindings.add("c-p")
        def _previous(event: KeyPressEvent) -> None:
            self.controller.open_next(-1)

        for digit in "123456789":
            self._bind_open(bindings, digit)

        return bindings

    def _bind_open(self, bindings: KeyBindings, digit: str) -> None:
        @bindings.add("escape", digit)  # Alt-digit
        def _open(event: KeyPressEvent) -> None:
            self.controller.open_number(int(digit))


# -- the command -------------------------------------------------------------------


def _marked(style: str, text: str) -> StyleAndTextTuples:
    """One entry of the bar that is not a tab: ``─ text ``."""
    return [("class:rule", RULE), (style, text), ("class:rule", " ")]


def _hidden_style(hidden: tuple[int, int]) -> str:
    """Tabs out of view stand out when they hold unread messages."""
    return "class:tab.unread" if hidden[1] else "class:tab"


def _parser() -> Parser:
    parser = Parser(prog="chat", description="Chat in a terminal, through any cluster member.")
    add_version_flag(parser)
    add_cluster_flag(parser)
    add_tls_flags(parser)
    parser.add_argument("--user", default="", help="log in as USER (asks only for the password)")
    parser.add_argument(
        "--history",
        metavar="PREFIX",
        default=os.environ.get("CHAT_HISTORY", str(user_data_dir() / "history")),
        help="commands typed are kept in PREFIX-USERNAME, mode 0600, one file per account "
        "(CHAT_HISTORY; default %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long one call waits for a leader before a command says it failed; "
        "messages and logins wait on (default %(default)s)",
    )
    parser.add_argument(
        "--no-bell", action="store_true", help="no bell for a message in another conversation"
    )
    parser.add_argument(
        "--no-mouse",
        action="store_true",
        help="leave the mouse to the terminal (the wheel then does not scroll the messages)",
    )
    parser.add_argument(
        "--unary",
        action="store_true",
        help="one unary call per action instead of one Session stream for them all",
    )
    return parser


async def _run(
    args: argparse.Namespace, members: list[str], credentials: grpc.ChannelCredentials | None
) -> int:
    policy = RetryPolicy(deadline_s=args.timeout)
    if not sys.stdin.isatty():
        print("chat: standard input is not a terminal; chat is interactive", file=sys.stderr)
        return 1
    Path(args.history).parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    async with ChatClient(
        members, credentials=credentials, policy=policy, unary=args.unary
    ) as client:
        controller = Controller(client, args.user)  # an unreachable cluster: it waits and says so
        view = ChatView(controller, args.history, bell=not args.no_bell, mouse=not args.no_mouse)
        _leave_on_signals(view.application)
        try:
            await view.run()
        finally:
            await controller.close()
    return 0


def _leave_on_signals(application: Application[None]) -> None:
    """SIGTERM and SIGHUP end the app as Ctrl-C does, so the terminal is left restored."""

    def leave() -> None:
        if application.is_running and not application.is_done:
            application.exit()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, leave)


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        members = member_addresses(args.cluster)
    except ValueError as exc:
        parser.error(str(exc))
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    try:
        credentials = tls_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    except OSError as exc:
        sys.exit(f"chat: {exc}")
    try:
        sys.exit(asyncio.run(_run(args, members, credentials)))
    except OSError as exc:  # unwritable history, no terminal
        sys.exit(f"chat: {exc}")
    except KeyboardInterrupt:
        sys.exit("chat: interrupted")


if __name__ == "__main__":
    main()
