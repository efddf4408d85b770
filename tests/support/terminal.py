"""A program in a pseudo-terminal, with its screen as a terminal would show it.

pexpect runs the program in a pty and types; pyte interprets what it draws
(prompt_toolkit repaints only the cells that changed, so the raw byte stream
cannot be searched for text), and the test reads the emulated screen.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pexpect
import pyte

ROWS, COLUMNS = 24, 100
WAIT_S = 20.0
REPO = Path(__file__).resolve().parents[2]


class Terminal:
    """A program in a pty, with its screen as a terminal would show it."""

    def __init__(self, args: list[str], command: Sequence[str] = (sys.executable,)) -> None:
        """Run ``command + args`` (by default this Python with args) in a pty."""
        self.screen = pyte.Screen(COLUMNS, ROWS)
        self._stream = pyte.ByteStream(self.screen)
        env = {**os.environ, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}
        program, *rest = [*command, *args]
        self.child = pexpect.spawn(
            program, rest, cwd=str(REPO), env=env, dimensions=(ROWS, COLUMNS)
        )

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    def wait_for(self, text: str) -> None:
        """Read output until text is on the screen; fail with the screen after WAIT_S."""
        deadline = time.monotonic() + WAIT_S
        while text not in self.text():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{text!r} never appeared; the screen:\n{self.text()}")
            try:
                self._stream.feed(self.child.read_nonblocking(65536, timeout=remaining))
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                raise AssertionError(
                    f"exited before {text!r}; the screen:\n{self.text()}"
                ) from None

    def type(self, line: str) -> None:
        self.child.send(line + "\r")

    def exit_status(self) -> int:
        """Wait for the program to end (bounded) and return its status."""
        self.child.expect(pexpect.EOF, timeout=WAIT_S)
        self.child.close()
        return self.child.exitstatus

    def kill(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)

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
