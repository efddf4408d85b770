"""Which build of the product this process runs, for ``--version`` and ``chatctl status``.

Each node reports it in ``ClusterStatus.version``, so an operator sees a rolling
upgrade that stopped half way. It is the package version with where the files
came from: a release that ``deploy/install.sh`` made names itself in ``RELEASE``
beside its virtualenv (the digest of its files, the lock included); a checkout
names its git revision. It lives beside the protos because all three programs
print it and none of them may import another's package.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path

__all__ = ["version"]

SOURCE_TREE = Path(__file__).resolve().parents[1]


@functools.cache
def version() -> str:
    """``0.1.0+release.3f2a9c1b0d4e``, ``0.1.0+git.0a34778`` (``.dirty`` with uncommitted
    changes) or ``0.1.0+unknown``; read once, so a process keeps the answer it started with."""
    try:
        base = package_version("leased-chat")
    except PackageNotFoundError:
        base = "0+uninstalled"
    return f"{base}+{_origin()}"


def _origin() -> str:
    release = Path(sys.prefix).parent / "RELEASE"
    try:
        return "release." + release.read_text().strip()
    except OSError:
        pass
    try:
        described = subprocess.run(
            ["git", "-C", str(SOURCE_TREE), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return "git." + described.replace("-dirty", ".dirty")
