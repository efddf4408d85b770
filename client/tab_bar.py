"""Which conversations the bar under the pane can show in the screen's width.

Each tab is drawn as ``─ 2:bob (3) ``. When they do not all fit, the bar shows
a run of them that holds the open one, and says what it leaves out on each
side as ``─ «3 (5) `` and ``─ 4» ``: how many tabs, and how many unread
messages they hold, so a message in a conversation out of view is never out
of mind. The run grows from the open tab, one tab to the right then one to the
left, while it fits.
"""

from __future__ import annotations

from dataclasses import dataclass

from prompt_toolkit.utils import get_cwidth

__all__ = ["RULE", "Bar", "Tab", "fit", "marker_text", "tab_text"]

RULE = "─ "


@dataclass(frozen=True, slots=True)
class Tab:
    number: int
    name: str
    unread: int
    is_open: bool

    @property
    def label(self) -> str:
        return f"{self.number}:{self.name}"


@dataclass(frozen=True, slots=True)
class Bar:
    """The tabs to draw, and what each side leaves out: (tabs, unread) or None."""

    tabs: tuple[Tab, ...]
    before: tuple[int, int] | None
    after: tuple[int, int] | None


def fit(tabs: list[Tab], width: int) -> Bar:
    """The run of ``tabs`` around the open one that fits ``width`` cells with its markers
    (all of them when they fit; the open one alone when nothing else does)."""
    if not tabs:
        return Bar((), None, None)
    opened = next((i for i, tab in enumerate(tabs) if tab.is_open), 0)
    lo, hi = opened, opened + 1
    while True:
        wider = [(lo, hi + 1), (lo - 1, hi)]
        fitting = [(a, b) for a, b in wider if a >= 0 and b <= len(tabs)]
        fitting = [(a, b) for a, b in fitting if _width(_bar(tabs, a, b)) <= width]
        if not fitting:
            return _bar(tabs, lo, hi)
        lo, hi = fitting[0]


def tab_text(tab: Tab) -> tuple[str, str]:
    """The label and its unread count as drawn (the count '' when there is none)."""
    return tab.label, f" ({tab.unread})" if tab.unread else ""


def marker_text(hidden: tuple[int, int], *, before: bool) -> str:
    count, unread = hidden
    text = f"«{count}" if before else f"{count}»"
    return text + (f" ({unread})" if unread else "")


def _bar(tabs: list[Tab], lo: int, hi: int) -> Bar:
    return Bar(tuple(tabs[lo:hi]), _hidden(tabs[:lo]), _hidden(tabs[hi:]))


def _hidden(tabs: list[Tab]) -> tuple[int, int] | None:
    return (len(tabs), sum(tab.unread for tab in tabs)) if tabs else None


def _width(bar: Bar) -> int:
    texts = ["".join(tab_text(tab)) for tab in bar.tabs]
    if bar.before is not None:
        texts.append(marker_text(bar.before, before=True))
    if bar.after is not None:
        texts.append(marker_text(bar.after, before=False))
    return sum(get_cwidth(f"{RULE}{text} ") for text in texts)
