"""The committed gRPC stubs must be exactly what `python -m proto.generate` makes now."""

from pathlib import Path

from proto.generate import PROTO_DIR, generate


def test_committed_stubs_match_protos(tmp_path: Path) -> None:
    generate(tmp_path)
    fresh = sorted(p.name for p in (tmp_path / "proto").iterdir())
    assert fresh, "protoc produced nothing"
    stale = [
        name
        for name in fresh
        if not (PROTO_DIR / name).exists()
        or (PROTO_DIR / name).read_bytes() != (tmp_path / "proto" / name).read_bytes()
    ]
    assert not stale, f"stale stubs {stale}: run `python -m proto.generate` and commit"
