"""coord/shell/disk.py: a full disk is waited out and reported; an I/O error or a bug is not."""

from __future__ import annotations

import asyncio
import errno
import sqlite3

import pytest

from coord.shell import disk
from coord.shell.disk import DiskGuard


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(disk, "FIRST_RETRY_S", 0.001)
    monkeypatch.setattr(disk, "LAST_RETRY_S", 0.002)


def failing(times: int, exc: BaseException) -> tuple[list[int], object]:
    calls: list[int] = []

    async def attempt() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise exc
        return "written"

    return calls, attempt


@pytest.mark.parametrize(
    "full",
    [sqlite3.OperationalError("database or disk is full"), OSError(errno.ENOSPC, "No space")],
)
async def test_a_full_disk_is_retried_reported_and_cleared(full: BaseException) -> None:
    guard = DiskGuard()
    calls, attempt = failing(3, full)
    seen: list[str] = []

    async def watch() -> None:
        while not seen:
            if guard.fault:
                seen.append(guard.fault)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    assert await guard.write("log", attempt) == "written"  # type: ignore[arg-type]
    await asyncio.wait_for(watcher, 1)
    assert len(calls) == 4 and seen[0].startswith("log: ") and guard.fault == ""


@pytest.mark.parametrize(
    "fatal",
    [
        sqlite3.OperationalError("disk I/O error"),
        OSError(errno.EIO, "Input/output error"),
        sqlite3.DatabaseError("database disk image is malformed"),
        ValueError("a bug"),
    ],
)
async def test_an_io_error_corruption_or_a_bug_is_not_waited_out(fatal: BaseException) -> None:
    guard = DiskGuard()
    calls, attempt = failing(1, fatal)
    with pytest.raises(type(fatal)):
        await guard.write("state", attempt)  # type: ignore[arg-type]
    assert len(calls) == 1 and guard.fault == ""
