"""A program in a pseudo-terminal, with its screen as a terminal would show it.

pexpect runs the program in a pty and types; pyte interprets what it draws
(prompt_toolkit repaints only the cells that changed, so the raw byte stream
cannot be searched for text), and the test reads the emulated screen.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pexpect
import pyte

ROWS, COLUMNS = 24, 100
WAIT_S = 20.0
REPO = Path(__file__).resolve().parents[2]
PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"
PASTE_CHUNK = 1024
ALT_ENTER = "\x1b\r"  # what a terminal sends for Alt-Enter (and for Esc, Enter)
PAGE_UP, PAGE_DOWN = "\x1b[5~", "\x1b[6~"
CTRL_N, CTRL_P = "\x0e", "\x10"
WHEEL_UP, WHEEL_DOWN = "\x1b[<64;10;5M", "\x1b[<65;10;5M"  # xterm's SGR mouse reports
MOUSE_ON = b"\x1b[?1000h"  # what a program sends to have the mouse reported


def alt(key: str) -> str:
    """What a terminal sends for Alt-key."""
    return f"\x1b{key}"


class _Screen(pyte.Screen):
    """A screen that counts the bells it was sent."""

    bells = 0

    def bell(self, *args: object) -> None:
        self.bells += 1


class Terminal:
    """A program in a pty, with its screen as a terminal would show it."""

    def __init__(
        self, args: list[str], command: Sequence[str] = (sys.executable,), rows: int = ROWS
    ) -> None:
        """Run ``command + args`` (by default this Python with args) in a pty of rows lines."""
        self.screen = _Screen(COLUMNS, rows)
        self._stream = pyte.ByteStream(self.screen)
        self.output = bytearray()  # every byte the program wrote, escape sequences included
        env = {**os.environ, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}
        program, *rest = [*command, *args]
        self.child = pexpect.spawn(
            program, rest, cwd=str(REPO), env=env, dimensions=(rows, COLUMNS)
        )

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    def wait_for(self, text: str) -> None:
        """Read output until text is on the screen; fail with the screen after WAIT_S."""
        self.wait_until(lambda screen: text in screen, repr(text))

    def wait_until(self, holds: Callable[[str], bool], what: str, limit_s: float = WAIT_S) -> bool:
        """Read output until holds(the screen's text); after limit_s, fail with the screen
        (or, with a limit_s shorter than WAIT_S, return False)."""
        deadline = time.monotonic() + limit_s
        while not holds(self.text()):
            remaining = deadline - time.monotonic()
            if remaining <= 0 and limit_s < WAIT_S:
                return False
            if remaining <= 0:
                raise AssertionError(f"{what} never appeared; the screen:\n{self.text()}")
            try:
                self._feed(self.child.read_nonblocking(65536, timeout=remaining))
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                raise AssertionError(f"exited before {what}; the screen:\n{self.text()}") from None
        return True

    def type(self, line: str) -> None:
        self.child.send(line + "\r")

    def paste(self, text: str) -> None:
        """Paste text as a terminal does (bracketed paste), in pieces the pty can take,
        reading what the program draws meanwhile so neither side blocks the other."""
        data = f"{PASTE_START}{text}{PASTE_END}".encode()
        for start in range(0, len(data), PASTE_CHUNK):
            self.child.send(data[start : start + PASTE_CHUNK])
            self._read_available()

    def _feed(self, data: bytes) -> None:
        self.output += data
        self._stream.feed(data)

    def drain(self) -> str:
        """Take in what the program has drawn so far; the screen's text."""
        self._read_available()
        return self.text()

    def _read_available(self) -> None:
        try:
            while True:
                self._feed(self.child.read_nonblocking(65536, timeout=0))
        except (pexpect.TIMEOUT, pexpect.EOF):
            return

    def exit_status(self) -> int:
        """Wait for the program to end (bounded) and return its status."""
        self.child.expect(pexpect.EOF, timeout=WAIT_S)
        self.child.close()
        return self.child.exitstatus

    def kill(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)

    def log_in(self, name: str, password: str) -> None:
        """Answer chat's first prompts for an account that exists."""
        self.wait_for("username:")
        self.type(name)
        self.wait_for(f"password for {name}:")
        self.type(password)
        self.wait_for(f"logged in as {name}")

    def sign_up(self, name: str, password: str) -> None:
        """Answer chat's first prompts: a new account, created and logged in."""
        for typed, shown in [
            ("", "username:"),
            (name, f"password for {name}:"),
            (password, f"create account {name}? [y/N]"),
            ("y", "password again:"),
            (password, f"logged in as {name}"),
        ]:
            if typed:
                self.type(typed)
            self.wait_for(shown)
