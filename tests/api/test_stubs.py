"""The committed gRPC stubs are exactly what the locked generator makes of the protos."""

import re
import shutil
import tomllib
from importlib.metadata import version
from pathlib import Path

from proto.generate import PROTO_DIR, stale_stubs

LOCK = PROTO_DIR.parent / "uv.lock"


def locked_version(name: str) -> str:
    with LOCK.open("rb") as lock:
        return next(p["version"] for p in tomllib.load(lock)["package"] if p["name"] == name)


def test_the_generator_is_the_locked_one() -> None:
    """The stubs' bytes depend on grpcio-tools' version, so only the locked one may judge
    them: a venv not made from uv.lock fails here, saying so, not in the next test."""
    installed, locked = version("grpcio-tools"), locked_version("grpcio-tools")
    assert installed == locked, (
        f"grpcio-tools {installed} is installed, uv.lock pins {locked}: "
        "install from the lock (./test.sh does)"
    )


def test_committed_stubs_match_protos() -> None:
    stale = stale_stubs()
    assert not stale, f"stale stubs {stale}: run `python -m proto.generate` and commit"


def test_a_proto_edited_without_regenerating_is_caught(tmp_path: Path) -> None:
    copy = tmp_path / "proto"
    shutil.copytree(PROTO_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert stale_stubs(copy) == []
    chat = copy / "chat.proto"
    edited, count = re.subn(
        r"message LogoutResponse \{\}",
        "message LogoutResponse { string farewell = 1; }",
        chat.read_text(),
    )
    assert count == 1, "the edit no longer applies: pick another message"
    chat.write_text(edited)
    assert stale_stubs(copy) == ["chat_pb2.py", "chat_pb2.pyi"]
