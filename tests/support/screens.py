"""The ``chat`` app in this process: keys typed through a pipe, the screen drawn to nowhere,
and bounded waits on what the pane, the prompt and the status bar show."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.output import DummyOutput

from client.app import ChatView
from client.app_controller import Controller
from client.library import ChatClient
from tests.support.nodes import PASSWORD

WAIT_S = 15.0
CTRL_C, CTRL_D = "\x03", "\x04"


@dataclass
class Screen:
    """The running app, with keys to type and bounded waits on what it shows."""

    view: ChatView
    pipe: PipeInput
    task: asyncio.Task[None]

    @property
    def controller(self) -> Controller:
        return self.view.controller

    @property
    def pane(self) -> str:
        return self.view.pane_text()

    @property
    def prompt(self) -> str:
        return self.controller.question.prompt

    def type(self, line: str) -> None:
        self.pipe.send_text(line + "\r")

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Wait (bounded) until predicate holds, re-checking on every change or keystroke."""
        changed = asyncio.Event()

        def wake(_: object = None) -> None:
            changed.set()

        remove = self.controller.add_listener(wake)
        buffer = self.view.input_field.buffer
        buffer.on_text_changed += wake
        buffer.on_completions_changed += wake
        try:
            async with asyncio.timeout(WAIT_S):
                while not predicate():
                    changed.clear()
                    await changed.wait()
        finally:
            remove()
            buffer.on_text_changed -= wake
            buffer.on_completions_changed -= wake

    async def until_shown(self, text: str) -> None:
        await self.until(lambda: text in self.pane)

    async def answer(self, line: str, next_prompt: str) -> None:
        """Type line and wait for the question after it."""
        self.type(line)
        await self.until(lambda: self.prompt.startswith(next_prompt))

    async def command(self, line: str, shows: str) -> None:
        self.type(line)
        await self.until_shown(shows)

    async def login(self, name: str) -> None:
        await self.answer(name, "password for")
        await self.answer(PASSWORD, ">")


@contextlib.asynccontextmanager
async def open_screen(members: list[str], history: Path, user: str = "") -> AsyncIterator[Screen]:
    async with ChatClient(members) as client:
        controller = Controller(client, user)
        with create_pipe_input() as pipe:
            view = ChatView(controller, history, input=pipe, output=DummyOutput())
            task = asyncio.create_task(view.run())
            try:
                yield Screen(view, pipe, task)
            finally:
                if not task.done():
                    pipe.send_text(CTRL_C)
                async with asyncio.timeout(WAIT_S):
                    await task
                await controller.close()
