"""The simulator's grid: every cell of the envelope, seeds run and violations per cell.

    python -m coord.sim sweep                     # the long sweep, 300 seeds per cell
    python -m coord.sim sweep --seeds 30          # a quick look
    python -m coord.sim sweep --only failstop-n3  # cells whose name contains this
    python -m coord.sim sweep --disk-faults       # every cell with ENOSPC/EIO on top

The grid: message delay bound in {20 ms, lease/4, lease/2, lease} (with the
simulator's 200 ms lease: 20, 50, 100, 200: four distinct delays) x fsync in {fast: up to
2 ms; stalls: up to 20 ms and 2-5 lease stalls at rate 0.05} x membership
changes off/on x both modes x 3 and 5 nodes: 64 cells. Liveness is checked
where the model promises it (delay <= lease/2), safety everywhere.

Each cell prints a row: seeds run; what they exercised (acknowledged writes,
terms in which a node led, fsync stalls and disk-full spells, per seed: a
cell with 0 violations and nothing acknowledged proved little); violations;
the first failing seed with its error; and at the end the replay command of
each cell's first failure.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from coord.testing.sim import (
    DEFAULT_STALL_RATE,
    MODES,
    SIM_SETTINGS,
    Result,
    Schedule,
    replay_command,
    run_seeds,
)

LEASE = SIM_SETTINGS.lease_ms
DELAYS = (20, LEASE // 4, LEASE // 2, LEASE)
FSYNCS = ("fast", "stalls")
NODE_COUNTS = (3, 5)
DEFAULT_SEEDS = 300


@dataclass(frozen=True, slots=True)
class Cell:
    mode: str
    nodes: int
    delay_ms: int
    fsync: str
    membership: bool
    disk_faults: bool = False

    @property
    def name(self) -> str:
        """A stable id, e.g. ``failstop-n3-d100-stalls-membership`` (used by CI's xfail list)."""
        parts = [self.mode, f"n{self.nodes}", f"d{self.delay_ms}", self.fsync]
        parts.append("membership" if self.membership else "static")
        if self.disk_faults:
            parts.append("diskfaults")
        return "-".join(parts)

    def schedule(self) -> Schedule:
        stalls = self.fsync == "stalls"
        return Schedule(
            mode=self.mode,
            nodes=self.nodes,
            max_delay_ms=self.delay_ms,
            fsync_ms=20 if stalls else 2,
            stall_rate=DEFAULT_STALL_RATE if stalls else 0.0,
            membership=self.membership,
            disk_faults=self.disk_faults,
        )


def grid(*, disk_faults: bool = False) -> list[Cell]:
    return [
        Cell(mode, nodes, delay, fsync, membership, disk_faults)
        for mode in MODES
        for nodes in NODE_COUNTS
        for delay in DELAYS
        for fsync in FSYNCS
        for membership in (False, True)
    ]


@dataclass(frozen=True, slots=True)
class CellResult:
    cell: Cell
    seeds: int
    failures: tuple[Result, ...]
    seconds: float

    acked: int = 0  # acknowledged writes over all seeds: what the cell exercised
    terms_led: int = 0
    stalls: int = 0

    @property
    def first(self) -> Result | None:
        return self.failures[0] if self.failures else None


def run_cell(cell: Cell, seeds: range) -> CellResult:
    started = time.monotonic()
    results = list(run_seeds(seeds, cell.schedule()))
    return CellResult(
        cell,
        len(seeds),
        tuple(r for r in results if not r.ok),
        time.monotonic() - started,
        sum(r.acked for r in results),
        sum(r.terms_led for r in results),
        sum(r.stalls for r in results),
    )


def sweep(
    cells: list[Cell], seeds: range, progress: Callable[[CellResult], None] | None = None
) -> Iterator[CellResult]:
    for cell in cells:
        result = run_cell(cell, seeds)
        if progress is not None:
            progress(result)
        yield result


HEADER = (
    "| cell | liveness | seeds | acked/seed | terms led/seed | stalls/seed | violations "
    "| first failing seed | its error |"
)
RULE = "|---|---|---|---|---|---|---|---|---|"


def row(result: CellResult, width: int = 110) -> str:
    cell, first = result.cell, result.first
    owed = "checked" if cell.schedule().liveness_owed else "safety only"
    error = first.error if first else ""
    if len(error) > width:
        error = error[: width - 3] + "..."
    seed = str(first.seed) if first else ""
    n = max(result.seeds, 1)
    cover = f"{result.acked / n:.0f} | {result.terms_led / n:.1f} | {result.stalls / n:.1f}"
    return (
        f"| {cell.name} | {owed} | {result.seeds} | {cover} | {len(result.failures)} "
        f"| {seed} | {error} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m coord.sim sweep", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="seeds per cell")
    parser.add_argument("--first", type=int, default=0, help="the first seed of each cell")
    parser.add_argument("--only", action="append", default=[], help="cells whose name has this")
    parser.add_argument("--disk-faults", action="store_true", help="ENOSPC/EIO in every cell")
    args = parser.parse_args(argv)
    cells = [
        c
        for c in grid(disk_faults=args.disk_faults)
        if not args.only or any(part in c.name for part in args.only)
    ]
    seeds = range(args.first, args.first + args.seeds)
    print(
        f"sweep: {len(cells)} cells x {args.seeds} seeds (from {args.first}); lease {LEASE} ms; "
        f"liveness checked for delays <= {LEASE // 2} ms",
        flush=True,
    )
    print(HEADER)
    print(RULE, flush=True)
    started = time.monotonic()
    results = list(sweep(cells, seeds, lambda r: print(row(r), flush=True)))
    failed = [r for r in results if r.failures]
    total = sum(len(r.failures) for r in results)
    print(
        f"\n{sum(r.seeds for r in results)} seeds in {time.monotonic() - started:.0f} s: "
        f"{total} violations in {len(failed)} of {len(results)} cells"
    )
    for result in failed:
        assert result.first is not None
        print(f"  {result.cell.name}: {replay_command(result.first)}")
    return 1 if failed else 0
