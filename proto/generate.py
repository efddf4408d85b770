"""Regenerate the Python stubs from ``proto/*.proto``: ``python -m proto.generate [--check]``.

Stubs are committed so that an installed wheel needs no code generator at run
time. The generator is grpcio-tools at the version uv.lock pins (a developer
tool, in the dev group), so the same protos always give the same bytes;
``tests/api/test_stubs.py`` checks that the committed stubs are those bytes.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent


def generate(out_dir: Path, proto_dir: Path = PROTO_DIR) -> None:
    """Write ``*_pb2.py``, ``*_pb2.pyi`` and ``*_pb2_grpc.py`` for each proto under out_dir.

    The protos import each other as ``proto/NAME.proto``, so proto_dir's parent is the
    include root whatever folder holds it.
    """
    from grpc_tools import protoc  # the dev group's: nodes run the committed stubs

    root = proto_dir.parent
    (out_dir / proto_dir.name).mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"
    for source in sorted(proto_dir.glob("*.proto")):
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


def stale_stubs(proto_dir: Path = PROTO_DIR) -> list[str]:
    """The stubs in proto_dir that differ from what its protos generate now (missing ones
    included); empty when every committed stub is current."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out, proto_dir)
        fresh = sorted((out / proto_dir.name).iterdir())
        if not fresh:
            raise SystemExit("protoc produced nothing")
        return [
            stub.name
            for stub in fresh
            if not (proto_dir / stub.name).exists()
            or (proto_dir / stub.name).read_bytes() != stub.read_bytes()
        ]


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        stale = stale_stubs()
        for name in stale:
            print(f"proto/{name} is stale: run `python -m proto.generate` and commit it")
        return 1 if stale else 0
    if argv:
        print("usage: python -m proto.generate [--check]", file=sys.stderr)
        return 2
    generate(PROTO_DIR.parent)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
