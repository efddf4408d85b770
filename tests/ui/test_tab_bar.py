"""The bar under the pane as a table (client/tab_bar.py): which tabs a width holds, with
the open one always among them and what is left out said on each side."""

from __future__ import annotations

import pytest
from prompt_toolkit.utils import get_cwidth

from client.tab_bar import Bar, Tab, fit, marker_text, tab_text


def tabs(opened: int, *unread: int, name: str = "abcdefgh") -> list[Tab]:
    """Tab 1 the console, then one per count; tab ``opened`` open."""
    named = ["chat"] + [f"{name}{i}" for i in range(2, len(unread) + 2)]
    counts = (0, *unread)
    return [Tab(i + 1, named[i], counts[i], i + 1 == opened) for i in range(len(named))]


def drawn(bar: Bar) -> str:
    """The bar as the app draws it, in plain text."""
    parts = [marker_text(bar.before, before=True)] if bar.before else []
    parts += ["".join(tab_text(tab)) for tab in bar.tabs]
    parts += [marker_text(bar.after, before=False)] if bar.after else []
    return "".join(f"─ {part} " for part in parts)


# "─ 1:chat " is 9 cells, "─ 2:abcdefgh2 " 14, "─ 3» " 5, "─ «2 " 5
@pytest.mark.parametrize(
    ("the_tabs", "width", "expected"),
    [
        (tabs(1, 0, 0), 80, "─ 1:chat ─ 2:abcdefgh2 ─ 3:abcdefgh3 "),  # all fit
        (tabs(1, 0, 0), 37, "─ 1:chat ─ 2:abcdefgh2 ─ 3:abcdefgh3 "),  # exactly
        (tabs(1, 0, 0), 36, "─ 1:chat ─ 2:abcdefgh2 ─ 1» "),  # one cell short
        (tabs(1, 0, 4), 36, "─ 1:chat ─ 2:abcdefgh2 ─ 1» (4) "),  # unread out of view
        (tabs(3, 0, 0), 36, "─ «1 ─ 2:abcdefgh2 ─ 3:abcdefgh3 "),  # the open one stays
        (tabs(3, 2, 0), 25, "─ «2 (2) ─ 3:abcdefgh3 "),  # the open one alone
        (tabs(2, 0, 0, 0), 33, "─ 1:chat ─ 2:abcdefgh2 ─ 2» "),  # right first, then left
        (tabs(3, 0, 0, 0, 0), 38, "─ «2 ─ 3:abcdefgh3 ─ 4:abcdefgh4 ─ 1» "),  # both sides
        (tabs(3, 0, 0), 5, "─ «2 ─ 3:abcdefgh3 "),  # too narrow: still the open one
        ([], 80, ""),
    ],
)
def test_fit(the_tabs: list[Tab], width: int, expected: str) -> None:
    bar = fit(the_tabs, width)
    assert drawn(bar) == expected
    assert get_cwidth(expected) <= width or len(bar.tabs) == 1


def test_wide_names_are_measured_in_cells() -> None:
    wide = tabs(2, 0, 0, name="会話")  # two cells a character
    assert drawn(fit(wide, 20)) == "─ «1 ─ 2:会話2 ─ 1» "
