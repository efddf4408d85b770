"""Driving deploy/cluster.sh against a lab, as an operator would over ssh."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.netns.hosts import REPO, Host, Lab, unavailable

WHEELHOUSE = REPO / ".venv" / "wheelhouse"
DEPLOY_TIMEOUT_S = 600.0
VENV_BIN = Path("/opt/chat/.venv/bin")


def skip_reason() -> str | None:
    """Why cluster.sh cannot deploy to a lab here, or None when it can."""
    if (reason := unavailable()) is not None:
        return reason
    if not (WHEELHOUSE / ".built").exists():
        return f"no wheelhouse at {WHEELHOUSE} (./test.sh builds it: ensure_wheelhouse)"
    return None


def skip_unless_possible() -> None:
    """Skip the calling test module where a lab cannot be built, saying why."""
    if (reason := skip_reason()) is not None:
        pytest.skip(reason, allow_module_level=True)


def cluster_sh(
    lab: Lab, *args: str, repo: Path = REPO, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run deploy/cluster.sh VERB ... with the lab's ssh stand-in; fail showing its output."""
    done = subprocess.run(
        ["bash", str(repo / "deploy" / "cluster.sh"), *args],
        env=lab.deploy_env(),
        capture_output=True,
        text=True,
        timeout=DEPLOY_TIMEOUT_S,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"cluster.sh {' '.join(args)} exited {done.returncode}\n"
            f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        )
    return done


def status_rows(host: Host) -> list[dict]:
    """`chatctl status --json` as an operator runs it on a node's machine."""
    return json.loads(host.run("chatctl status --json").stdout)


def main_pid(host: Host) -> int:
    return int(host.run("systemctl show -p MainPID --value chatnode").stdout.strip() or 0)
