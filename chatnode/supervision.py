"""Tell systemd how the node is doing: the sd_notify datagram protocol (man sd_notify).

systemd (``Type=notify``) passes ``NOTIFY_SOCKET``, an AF_UNIX datagram socket (a path,
or with a leading ``@`` a name in the abstract namespace); each datagram is newline
separated ``KEY=VALUE`` assignments. The node sends READY=1 once it serves, STATUS= with
its role, term and leader, STOPPING=1 when it drains, and WATCHDOG=1 from its event loop
at half of ``WATCHDOG_USEC``, so a loop stuck past ``WatchdogSec=`` is killed and
restarted. Without ``NOTIFY_SOCKET`` (a dev run, the tests) every call does nothing.

A notification is advice to the supervisor, never a reason to stop serving: a failed send
is logged once and the node goes on (and keeps trying).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable, Mapping

from coord.boundary import Status

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages to the socket systemd named, if it named one."""

    def __init__(self, address: str | bytes | None, watchdog_s: float | None) -> None:
        self._address = address
        self.watchdog_s = watchdog_s
        self._sock: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_environment(cls, env: Mapping[str, str] = os.environ) -> Notifier:
        """The notifier systemd's environment asks for: WATCHDOG_PID, when set, names the
        process the watchdog watches, and a child that inherited it must not ping for it."""
        return cls(_socket_address(env.get("NOTIFY_SOCKET", "")), _watchdog_s(env))

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, **fields: str | int) -> None:
        """One datagram of KEY=VALUE lines, e.g. ``send(READY=1, STATUS="serving")``."""
        if self._address is None:
            return
        message = "\n".join(f"{key}={value}" for key, value in fields.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)  # never wait on systemd from the event loop
            self._sock.sendto(message.encode(), self._address)
        except OSError as exc:
            # Keep trying (a full queue drains), but say it once: a watchdog ping fails
            # every few seconds and would flood the journal.
            if not self._failed:
                log.warning(
                    "cannot notify systemd at %r: %s",
                    self._address,
                    exc,
                    extra={"event": "notify_failed"},
                )
            self._failed = True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def keep_alive(self) -> None:
        """WATCHDOG=1 at half the watchdog's period, from the event loop: a loop that
        stops turning stops the pings, and systemd kills and restarts the node."""
        if self.watchdog_s is None or not self.enabled:
            return
        while True:
            self.send(WATCHDOG=1)
            await asyncio.sleep(self.watchdog_s / 2)

    async def report_leadership(
        self, changes: AsyncIterator[object], status: Callable[[], Status]
    ) -> None:
        """Keep STATUS= (shown by `systemctl status`) on this node's role, term and leader,
        read afresh at each leadership change."""
        async for _ in changes:
            self.send(STATUS=status_line(status()))


def status_line(status: Status) -> str:
    """One line an operator reads in `systemctl status`."""
    leader = f"leader {status.leader_id}" if status.leader_id else "no leader"
    return f"{status.role}, term {status.term}, {leader}"


def _socket_address(value: str) -> str | bytes | None:
    """A path, or an abstract-namespace name (leading ``@`` becomes a NUL byte)."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def _watchdog_s(env: Mapping[str, str]) -> float | None:
    """The watchdog period in seconds if it is on and watches this process."""
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1e6
