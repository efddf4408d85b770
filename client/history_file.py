"""The chat prompt's history: one private file per account.

Several people may share a machine account's data directory, and one person
may use several chat accounts: each chat account gets its own file, named
PREFIX-USERNAME, readable by its owner only (0600, also when it existed with
looser permissions), in a directory only the owner can list (0700 when made).
"""

from __future__ import annotations

import os
from pathlib import Path

from prompt_toolkit.history import FileHistory

FILE_MODE = 0o600
DIR_MODE = 0o700


def history_path(prefix: str | Path, username: str) -> Path:
    """Where username's history lives (usernames are [A-Za-z0-9_.-], safe in a file name)."""
    prefix = Path(prefix)
    return prefix.with_name(f"{prefix.name}-{username}")


def open_private_history(path: Path) -> FileHistory:
    """path as a FileHistory, created 0600 (or made 0600) before anything is written to it."""
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, FILE_MODE))
    os.chmod(path, FILE_MODE)
    return FileHistory(path)
