"""``python -m coord.sim``: the protocol simulator's command line.

``python -m coord.sim [flags]`` runs seeds of one schedule (coord/testing/sim.py);
``python -m coord.sim sweep [flags]`` runs the grid of schedules
(coord/testing/sim_sweep.py). The simulator is a development tool kept out of the
wheel: this entry point works in a checkout and says so elsewhere.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        from coord.testing import sim, sim_sweep
    except ModuleNotFoundError:
        print("coord.sim: the simulator ships with the source tree; run it from a checkout")
        return 2
    if argv[:1] == ["sweep"]:
        return sim_sweep.main(argv[1:])
    return sim.main(argv)


if __name__ == "__main__":
    sys.exit(main())
