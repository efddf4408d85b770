"""The core's public surface: importable without grpc, and every name it lists exists."""

from __future__ import annotations

import subprocess
import sys

import coord.core


def test_the_core_imports_without_grpc() -> None:
    code = "import sys; sys.modules['grpc'] = None; import coord.core"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_public_name_exists() -> None:
    assert all(hasattr(coord.core, name) for name in coord.core.__all__)
