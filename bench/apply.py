"""CPU time to apply SendMessage ops to one ChatState, by batch size: the state machine's
own cost per op, without a cluster, a network or a disk wait (synchronous=NORMAL).

Every replica pays this for every message, so it is judged on its own, where it
repeats within a few percent, not only inside a cluster run:

    .venv/bin/python -m bench.apply [--ops 20000] [--batches 8,32,128,512] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from chatnode import ops
from chatnode.state import ChatState

NOW = 1_700_000_000_000
ACCOUNTS = 64


def microseconds_per_op(count: int, batch: int) -> float:
    """Apply count sends (each with a request id, as the client library stamps them) in
    batches of batch entries to a fresh state; CPU microseconds per op."""
    with tempfile.TemporaryDirectory(prefix="bench-apply-") as folder:
        state = ChatState(Path(folder) / "state.db")
        index = 0

        def apply(items: list[ops.Op]) -> None:
            nonlocal index
            state.apply([(index + i + 1, op) for i, op in enumerate(items)])
            index += len(items)

        apply([ops.CreateAccount(f"u{i}", "h", "", NOW) for i in range(ACCOUNTS)])
        apply(
            [
                ops.Login(f"u{i}", i + 1, f"t{i}", "", "", NOW, "", NOW + 10**10)
                for i in range(ACCOUNTS)
            ]
        )
        sends: list[ops.Op] = [
            ops.SendMessage(
                f"t{i % ACCOUNTS}", f"u{(i + 1) % ACCOUNTS}", "hello", f"r{i}", NOW + i, False
            )
            for i in range(count)
        ]
        started = time.process_time()
        for first in range(0, count, batch):
            apply(sends[first : first + batch])
        spent = time.process_time() - started
        state.close()
    return spent / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--batches", default="8,32,128,512")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for batch in (int(b) for b in args.batches.split(",")):
        runs = [microseconds_per_op(args.ops, batch) for _ in range(args.rounds)]
        print(f"batch {batch:5d}: {statistics.median(runs):6.1f} us/op (median of {args.rounds})")


if __name__ == "__main__":
    main()
