"""Every scenario script in tests/core/testdata, one test per file (tests/support/scenario.py).

A failure shows the unified diff of the expected and the actual output;
``REWRITE=1`` regenerates the expected output, to be reviewed line by line.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.scenario import run_file

TESTDATA = Path(__file__).parent / "testdata"
SCRIPTS = sorted(TESTDATA.glob("*.txt"))


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_scenario(path: Path) -> None:
    diff = run_file(path)
    if diff:
        pytest.fail(f"{path.name} differs (REWRITE=1 accepts it):\n{diff}", pytrace=False)
