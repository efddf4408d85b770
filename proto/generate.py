"""Regenerate the Python stubs from ``proto/*.proto``: ``python -m proto.generate``.

Stubs are committed so that an installed wheel needs no code generator at run
time; ``tests/api/test_stubs.py`` regenerates them into a temporary folder and fails
when the committed copies are stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

PROTO_DIR = Path(__file__).resolve().parent


def generate(out_dir: Path) -> None:
    """Write ``*_pb2.py``, ``*_pb2.pyi`` and ``*_pb2_grpc.py`` for each proto under out_dir."""
    root = PROTO_DIR.parent
    (out_dir / "proto").mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"
    for source in sorted(PROTO_DIR.glob("*.proto")):
        args = [
            "protoc",
            f"-I{root}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(source.relative_to(root)),
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {source.name}")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else PROTO_DIR.parent)
