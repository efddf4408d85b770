"""The worked example of coord/PROTOCOL.md §2 runs as written (a doctest)."""

from __future__ import annotations

import doctest
from pathlib import Path

PROTOCOL = Path(__file__).resolve().parents[2] / "coord" / "PROTOCOL.md"


def test_the_worked_example_in_protocol_md_runs() -> None:
    result = doctest.testfile(str(PROTOCOL), module_relative=False, report=True, verbose=False)
    assert result.attempted > 0, "PROTOCOL.md lost its doctest"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed (see above)"
