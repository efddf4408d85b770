"""The message pane: the open conversation wrapped to the pane's width, pinned to its
newest line while at the bottom, scrolled back by PgUp/PgDn and the mouse wheel.

Where the pane is scrolled to is kept as the line (and row of that line) at its
bottom, not as a count of rows, so the text in view stays put while older
history is loaded above it and new messages arrive below it; a conversation
with no such anchor is at the bottom and follows what arrives. Drawing only
the rows in view also shows a message taller than the pane row by row.
"""

from __future__ import annotations

import functools
import time

from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.layout.controls import UIContent, UIControl
from prompt_toolkit.mouse_events import MouseEvent, MouseEventType
from prompt_toolkit.utils import get_cwidth

from client.app_controller import Controller
from client.conversations import Key

WHEEL_ROWS = 3  # rows one notch of the mouse wheel scrolls
WRAP_CACHE = 1 << 16  # lines whose rows are remembered: a redraw re-cuts only new ones

Row = tuple[tuple[Key, int], str, str]  # (line key, row of that line), style, text


class MessagePane(UIControl):
    """A prompt_toolkit control over :meth:`Controller.pane_lines`."""

    def __init__(self, controller: Controller) -> None:
        self._controller = controller
        self._anchors: dict[str, tuple[Key, int]] = {}  # per partner; none: at the bottom
        self._cache: tuple[object, list[Row]] = (None, [])
        self._rows: list[Row] = []
        self._bottom = 0  # the rows drawn last: [bottom - height, bottom)
        self._height = 0

    def is_focusable(self) -> bool:
        return False

    def create_content(self, width: int, height: int) -> UIContent:
        rows = self._rows = self._wrapped(max(width, 1))
        self._bottom, self._height = self._anchored_bottom(rows), height
        top = max(0, self._bottom - height)
        if top < height:  # within a page of the top: fetch older history before it is needed
            self._controller.load_older()
        shown = rows[top : self._bottom]

        def line(number: int) -> StyleAndTextTuples:
            _, style, text = shown[number]
            return [(style, text)]

        return UIContent(get_line=line, line_count=len(shown), show_cursor=False)

    def mouse_handler(self, mouse_event: MouseEvent) -> object:
        if mouse_event.event_type == MouseEventType.SCROLL_UP:
            self.scroll(WHEEL_ROWS)
        elif mouse_event.event_type == MouseEventType.SCROLL_DOWN:
            self.scroll(-WHEEL_ROWS)
        else:
            return NotImplemented
        return None

    @property
    def scrolled_back(self) -> bool:
        """Whether the open conversation is scrolled back (so not following what arrives)."""
        return self._controller.partner in self._anchors

    def page(self, pages: int) -> None:
        """Scroll back (positive) or forward by pages, keeping one row of the last page."""
        self.scroll(pages * max(self._height - 1, 1))

    def scroll(self, rows_back: int) -> None:
        """Move the pane's bottom rows_back rows up (negative: down), within the rows."""
        total = len(self._rows)
        bottom = min(total, max(min(self._height, total), self._bottom - rows_back))
        partner = self._controller.partner
        if bottom >= total:
            self._anchors.pop(partner, None)
        else:
            self._anchors[partner] = self._rows[bottom - 1][0]

    def _anchored_bottom(self, rows: list[Row]) -> int:
        anchor = self._anchors.get(self._controller.partner)
        if anchor is not None:
            for index in range(len(rows) - 1, -1, -1):
                if rows[index][0] == anchor:
                    return index + 1
            del self._anchors[self._controller.partner]  # its line is gone: back to the bottom
        return len(rows)

    def _wrapped(self, width: int) -> list[Row]:
        """Every line of the open conversation as rows of at most width cells (cached until
        the conversation, the width or the day changes)."""
        controller = self._controller
        version = (controller.revision, controller.partner, width, time.localtime()[:3])
        if self._cache[0] != version:
            rows = [
                ((key, part), f"class:{line.kind}", text)
                for key, line in controller.pane_lines()
                for part, text in enumerate(wrap(line.text, width))
            ]
            self._cache = (version, rows)
        return self._cache[1]


@functools.lru_cache(maxsize=WRAP_CACHE)
def wrap(text: str, width: int) -> tuple[str, ...]:
    """text cut into rows of at most width terminal cells: at its newlines, and where a
    line overflows, at its last space that fits (a word longer than a row is cut)."""
    rows: list[str] = []
    for line in text.split("\n"):
        while (cut := _fitting(line, width)) < len(line):
            space = line.rfind(" ", 0, cut + 1)
            if space > 0:
                rows.append(line[:space])
                line = line[space + 1 :]
            else:
                rows.append(line[:cut])
                line = line[cut:]
        rows.append(line)
    return tuple(rows)


def _fitting(line: str, width: int) -> int:
    """How many of line's first characters fit in width cells (at least one)."""
    if line.isprintable():
        if line.isascii():  # most chat: one cell each
            return min(len(line), width)
        if get_cwidth(line) <= width:  # measured whole (and cached) by prompt_toolkit
            return len(line)
    used = 0
    for index, char in enumerate(line):
        used += get_cwidth(char) if char.isprintable() else 2  # a control is drawn as ^X
        if used > width:
            return max(index, 1)
    return len(line)
