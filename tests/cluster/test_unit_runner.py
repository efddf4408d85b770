"""The systemctl stand-in of the namespace test hosts (tests/netns/unit_runner.py).

Each process test drives the real wrapper, tests/netns/bin/systemctl, under the host's
/usr/bin/python3 as the deploy script will, against a tiny unit in a temporary unit
directory. The unit's service is a Python script that appends what it was given (uid,
gids, cwd, umask, the environment it was exec'd with) to $STATE_DIRECTORY/runs.jsonl and
then waits for signals; environment variables in the unit make it ignore SIGTERM, exit
cleanly on it, fail its first run, send READY=1 (from itself or from a child) after a
delay, or send WATCHDOG=1 at half of WATCHDOG_USEC.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.netns import unit_runner

REPO = Path(__file__).resolve().parents[2]
SYSTEMCTL = REPO / "tests" / "netns" / "bin" / "systemctl"
SYSTEM_PYTHON = Path("/usr/bin/python3")
RESTART_SEC = 0.2
T = TypeVar("T")

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not SYSTEM_PYTHON.exists(),
    reason="runs services as User=nobody and chowns StateDirectory=: needs root and "
    "/usr/bin/python3 (the interpreter of the test hosts)",
)

SERVICE = """\
import json, os, resource, signal, socket, sys, time
def notify(text):
    address = os.environ["NOTIFY_SOCKET"].replace("@", "\\0", 1)
    socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(text.encode(), address)
if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if os.environ.get("EXIT_ON_TERM"):
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
umask = os.umask(0)
os.umask(umask)
with open("/proc/self/environ") as f:  # as exec'd: Python may add LC_CTYPE to os.environ
    env = dict(item.split("=", 1) for item in f.read().split("\\0") if item)
record = {
    "pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid(),
    "groups": sorted(os.getgroups()), "cwd": os.getcwd(), "umask": umask,
    "nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)), "env": env,
}
runs = os.path.join(os.environ["STATE_DIRECTORY"], "runs.jsonl")
with open(runs, "a") as f:
    f.write(json.dumps(record) + "\\n")
with open(runs) as f:
    first_run = len(f.readlines()) == 1
if first_run and os.environ.get("FIRST_RUN_EXIT"):
    sys.exit(int(os.environ["FIRST_RUN_EXIT"]))
if os.environ.get("READY_AFTER"):
    time.sleep(float(os.environ["READY_AFTER"]))
    if not os.environ.get("READY_FROM_CHILD"):
        notify("READY=1\\nSTATUS=serving, run " + str(len(open(runs).readlines())))
    elif os.fork() == 0:
        notify("READY=1")
        os._exit(0)
while os.environ.get("PING"):
    notify("WATCHDOG=1")
    time.sleep(int(os.environ["WATCHDOG_USEC"]) / 2e6)
while True:
    signal.pause()
"""

ENV_FILE = """\
# the syntax of /etc/chat/chatnode.env
; also a comment

CHAT_NODE_ID=1
QUOTED="two words"
SINGLE='$literal'
SPACED =  padded
OVERRIDDEN=by-file
"""


class Host:
    """A temporary unit, state, log and state-root directory set, and the wrapper."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = os.environ | {
            "UNIT_SHIM_UNIT_DIR": str(root / "units"),
            "UNIT_SHIM_STATE_DIR": str(root / "state"),
            "UNIT_SHIM_LOG_DIR": str(root / "log"),
            "UNIT_SHIM_STATE_ROOT": str(root / "lib"),
        }
        self.env.pop("UNIT_SHIM_PYTHON", None)
        (root / "units").mkdir()
        (root / "service.py").write_text(SERVICE)
        (root / "demo.env").write_text(ENV_FILE)

    def write_unit(self, **overrides: str | None) -> Path:
        """demo.service; a keyword replaces a [Service] setting, None drops it."""
        service: dict[str, str | None] = {
            "Type": "exec",
            "User": "nobody",
            "EnvironmentFile": f"{self.root}/demo.env\nEnvironmentFile=-{self.root}/nope.env",
            "Environment": '"GREETING=hello world" OVERRIDDEN=by-environment',
            "ExecStart": f"{SYSTEM_PYTHON} {self.root}/service.py",
            "Restart": "on-failure",
            "RestartSec": f"{int(RESTART_SEC * 1000)}ms",
            "TimeoutStopSec": "2",
            "StateDirectory": "demo",
            "LimitNOFILE": "4096",
            "ProtectSystem": "strict",
        } | overrides
        lines = [f"{key}={value}" for key, value in service.items() if value is not None]
        text = "\n".join(["[Unit]", "Description=unit runner test", "[Service]", *lines])
        path = self.root / "units" / "demo.service"
        path.write_text(text + "\n[Install]\nWantedBy=multi-user.target\n")
        return path

    def systemctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SYSTEMCTL), *args], env=self.env, capture_output=True, text=True, timeout=30
        )

    def state(self) -> dict[str, Any]:
        path = self.root / "state" / "demo.service" / "state.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def runs(self) -> list[dict[str, Any]]:
        path = self.root / "lib" / "demo" / "runs.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def log(self) -> str:
        return (self.root / "log" / "demo.service.log").read_text()

    def started(self) -> dict[str, Any]:
        """Start demo and wait for its service's first record (its signal handlers are set)."""
        assert self.systemctl("start", "demo").returncode == 0
        return wait_for(lambda: self.runs()[-1:], "the service's first record")[0]


@pytest.fixture
def host() -> Iterator[Host]:
    """A Host whose unit is stopped afterwards; whatever survives that is killed."""
    root = Path(tempfile.mkdtemp(prefix="unit-runner-"))
    root.chmod(0o755)  # User=nobody must read the service script
    host = Host(root)
    try:
        yield host
    finally:
        host.systemctl("stop", "demo")
        state = host.state()
        for role in ("supervisor", "main"):
            fd = unit_runner.open_process(
                state.get(f"{role}_pid", 0), state.get(f"{role}_start", 0)
            )
            if fd is not None:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
                os.close(fd)
        shutil.rmtree(root)


def wait_for(probe: Callable[[], T], what: str, timeout_s: float = 5.0) -> T:
    """Poll another process's files until probe() is truthy. Bounded, and only for what no
    event carries across processes (a restart seen through the state file)."""
    deadline = time.monotonic() + timeout_s
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)
    return value


def wait_gone(pid: int, timeout_s: float = 5.0) -> None:
    """Wait for a process (not our child) to exit, through its pidfd."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        assert select.select([fd], [], [], timeout_s)[0], f"process {pid} still runs"
    finally:
        os.close(fd)


def process_state(pid: int) -> str:
    """The state letter of /proc/PID/stat: R, S, T (stopped), Z, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def is_running(pid: int) -> bool:
    try:
        return process_state(pid) not in "ZX"
    except FileNotFoundError:
        return False


# --- parsing (no processes) --------------------------------------------------------------


def test_the_real_chatnode_unit_parses_as_systemd_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIT_SHIM_UNIT_DIR", str(REPO / "deploy" / "systemd"))
    unit = unit_runner.load_unit(unit_runner.unit_name("chatnode"))
    assert (unit.user, unit.group) == ("chat", "chat")
    assert unit.environment_files == ("/etc/chat/chatnode.env",)
    assert unit.exec_start == ("/opt/chat/.venv/bin/chatnode",)
    assert (unit.restart, unit.restart_sec) == ("on-failure", 1.0)
    assert (unit.kill_signal, unit.timeout_stop_s) == (signal.SIGTERM, 20.0)
    assert (unit.type, unit.notify_access, unit.timeout_start_s) == ("notify", "main", 90.0)
    assert (unit.watchdog_s, unit.watchdog_signal, unit.timeout_abort_s) == (
        10.0,
        signal.SIGABRT,
        10.0,
    )
    assert unit.restart_prevent == {("exit", 2)}
    assert unit.state_directories == ("chat",)
    assert unit.limit_nofile == (65536, 65536)
    assert unit.wanted_by == ("multi-user.target",)


def test_environment_file_syntax() -> None:
    text = ENV_FILE + 'ESCAPED="a \\"quote\\""\nJOINED=one\\\ntwo\nnot a line\n1BAD=x\n'
    assert unit_runner.parse_env_file(text) == {
        "CHAT_NODE_ID": "1",
        "QUOTED": "two words",
        "SINGLE": "$literal",
        "SPACED": "padded",
        "OVERRIDDEN": "by-file",
        "ESCAPED": 'a "quote"',
        "JOINED": "onetwo",
    }


def test_time_spans_signals_and_drop_ins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert unit_runner.parse_seconds("1min 30s", "RestartSec") == 90.0
    assert unit_runner.parse_seconds("500ms", "RestartSec") == 0.5
    assert {unit_runner.parse_signal(s) for s in ("KILL", "SIGKILL", "kill", "9")} == {9}
    (tmp_path / "demo.service").write_text("[Service]\nExecStart=/bin/false\nRestart=always\n")
    (tmp_path / "demo.service.d").mkdir()
    (tmp_path / "demo.service.d" / "override.conf").write_text(
        "[Service]\nExecStart=\nExecStart=/bin/sleep ${LONG} $WORDS\n"
    )
    monkeypatch.setenv("UNIT_SHIM_UNIT_DIR", str(tmp_path))
    unit = unit_runner.load_unit("demo.service")
    assert unit.exec_start == ("/bin/sleep", "${LONG}", "$WORDS")
    env = {"LONG": "1 2", "WORDS": "3 4"}
    assert unit_runner.expand_command(unit.exec_start, env) == ["/bin/sleep", "1 2", "3", "4"]
    assert unit.restart == "always"


# --- starting ----------------------------------------------------------------------------


@needs_root
def test_start_runs_exec_start_as_the_user_in_a_clean_environment(host: Host) -> None:
    host.write_unit()
    record = host.started()
    assert host.systemctl("is-active", "demo").stdout == "active\n"
    assert record["pid"] == host.state()["main_pid"]
    nobody = pwd.getpwnam("nobody")
    assert (record["uid"], record["gid"]) == (nobody.pw_uid, nobody.pw_gid)
    assert record["groups"] == sorted(os.getgrouplist("nobody", nobody.pw_gid))
    assert (record["cwd"], record["umask"], record["nofile"]) == ("/", 0o022, [4096, 4096])
    env = record["env"]
    assert re.fullmatch(r"[0-9a-f]{32}", env.pop("INVOCATION_ID"))
    assert env == {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": nobody.pw_dir,
        "USER": "nobody",
        "LOGNAME": "nobody",
        "SHELL": nobody.pw_shell,
        "STATE_DIRECTORY": f"{host.root}/lib/demo",
        "GREETING": "hello world",
        "OVERRIDDEN": "by-file",  # EnvironmentFile= wins over Environment=
        "CHAT_NODE_ID": "1",
        "QUOTED": "two words",
        "SINGLE": "$literal",
        "SPACED": "padded",
    }
    state_dir = (host.root / "lib" / "demo").stat()
    assert (state_dir.st_uid, state_dir.st_gid) == (nobody.pw_uid, nobody.pw_gid)
    assert state_dir.st_mode & 0o7777 == 0o755


@needs_root
def test_group_and_working_directory(host: Host) -> None:
    (host.root / "work").mkdir()
    host.write_unit(Group="daemon", WorkingDirectory=f"{host.root}/work")
    record = host.started()
    daemon = grp.getgrnam("daemon").gr_gid
    assert (record["gid"], record["cwd"]) == (daemon, f"{host.root}/work")
    assert record["groups"] == sorted(os.getgrouplist("nobody", daemon))


@needs_root
def test_start_of_an_active_unit_changes_nothing_and_restart_replaces_it(host: Host) -> None:
    host.write_unit()
    first = host.started()["pid"]
    assert host.systemctl("start", "demo.service").returncode == 0
    assert host.state()["main_pid"] == first
    assert host.systemctl("show", "-p", "MainPID", "--value", "demo").stdout == f"{first}\n"
    assert host.systemctl("restart", "demo").returncode == 0
    wait_gone(first)
    second = host.state()["main_pid"]
    assert second != first
    assert host.systemctl("show", "--property=MainPID", "demo").stdout == f"MainPID={second}\n"


@needs_root
@pytest.mark.parametrize(
    ("exec_start", "reason"),
    [
        ("python3 service.py", "Executable path is not absolute: python3"),
        ("/nonexistent/chatnode", "Failed to execute /nonexistent/chatnode: No such file"),
        ("{root}/plain.sh", "Failed to execute {root}/plain.sh: Permission denied"),
    ],
)
def test_a_bad_exec_start_fails_start_in_one_line(host: Host, exec_start: str, reason: str) -> None:
    (host.root / "plain.sh").write_text("#!/bin/sh\nexec sleep 60\n")  # mode 0644
    host.write_unit(ExecStart=exec_start.format(root=host.root))
    result = host.systemctl("start", "demo")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("Failed to start demo.service: ")
    assert reason.format(root=host.root) in result.stderr
    assert host.systemctl("is-active", "demo").stdout != "active\n"
    state = host.state()
    assert not unit_runner.is_alive(
        state.get("supervisor_pid", 0), state.get("supervisor_start", 0)
    )


@needs_root
def test_a_missing_unit_fails_start_in_one_line(host: Host) -> None:
    result = host.systemctl("start", "nosuch")
    assert (result.returncode, result.stderr) == (
        1,
        "Failed to start nosuch.service: Unit nosuch.service not found.\n",
    )


@needs_root
@pytest.mark.parametrize(
    "args",
    [
        [],
        ["frobnicate", "demo"],
        ["start", "--bogus", "demo"],
        ["start"],
        ["kill", "-s", "NOPE", "demo"],
    ],
)
def test_usage_errors_exit_2_with_one_line(host: Host, args: list[str]) -> None:
    result = host.systemctl(*args)
    assert (result.returncode, result.stderr.count("\n")) == (2, 1)


@needs_root
def test_is_active_and_status_exit_codes(host: Host) -> None:
    assert host.systemctl("daemon-reload").returncode == 0
    host.write_unit()
    never = host.systemctl("is-active", "demo")
    assert (never.returncode, never.stdout) == (3, "inactive\n")
    assert host.systemctl("status", "demo").returncode == 3
    assert host.systemctl("status", "nosuch").returncode == 4
    host.started()
    quiet = host.systemctl("is-active", "--quiet", "demo")
    assert (quiet.returncode, quiet.stdout) == (0, "")
    status = host.systemctl("status", "demo")
    assert status.returncode == 0
    assert "Active: active (running)" in status.stdout
    assert f"Main PID: {host.state()['main_pid']}" in status.stdout


@needs_root
def test_enable_now_and_disable_now(host: Host) -> None:
    unit = host.write_unit()
    link = host.root / "units" / "multi-user.target.wants" / "demo.service"
    assert host.systemctl("enable", "--now", "demo").returncode == 0
    assert link.is_symlink() and link.resolve() == unit
    assert host.systemctl("is-enabled", "demo").stdout == "enabled\n"
    assert host.systemctl("is-active", "demo").returncode == 0
    assert host.systemctl("disable", "--now", "demo").returncode == 0
    assert not link.is_symlink()
    disabled = host.systemctl("is-enabled", "demo")
    assert (disabled.returncode, disabled.stdout) == (1, "disabled\n")
    inactive = host.systemctl("is-active", "demo")
    assert (inactive.returncode, inactive.stdout) == (3, "inactive\n")


# --- exits and restarts ------------------------------------------------------------------


def restarted(host: Host, old_pid: int) -> dict[str, Any]:
    """The state once the supervisor runs a main process other than old_pid."""

    def probe() -> dict[str, Any]:
        state = host.state()
        return state if state["active"] == "active" and state["main_pid"] != old_pid else {}

    return wait_for(probe, f"a main process other than {old_pid}")


@needs_root
def test_sigkill_under_on_failure_restarts_with_a_new_main_pid(host: Host) -> None:
    host.write_unit()
    first = host.started()["pid"]
    assert host.systemctl("kill", "-s", "KILL", "demo").returncode == 0
    state = restarted(host, first)
    assert state["restarts"] == 1
    assert wait_for(lambda: host.runs()[1:], "the second run")[0]["pid"] == state["main_pid"]
    assert host.systemctl("show", "-p", "NRestarts", "--value", "demo").stdout == "1\n"
    assert "code=killed, status=9/KILL" in host.log()


@needs_root
def test_sigterm_under_on_failure_is_a_clean_end(host: Host) -> None:
    host.write_unit()
    host.started()
    supervisor = host.state()["supervisor_pid"]
    assert host.systemctl("kill", "--signal=TERM", "demo").returncode == 0
    wait_gone(supervisor)  # it has decided: no restart can follow
    assert host.systemctl("is-active", "demo").stdout == "inactive\n"
    assert len(host.runs()) == 1


@needs_root
def test_exit_status_3_under_on_failure_restarts(host: Host) -> None:
    host.write_unit(Environment="FIRST_RUN_EXIT=3")
    host.started()
    assert wait_for(lambda: host.state()["restarts"] == 1, "the restart")
    assert wait_for(lambda: host.runs()[1:], "the second run")
    assert host.systemctl("is-active", "demo").returncode == 0
    assert "code=exited, status=3" in host.log()


@needs_root
def test_restart_no_leaves_a_killed_unit_failed(host: Host) -> None:
    host.write_unit(Restart="no")
    host.started()
    supervisor = host.state()["supervisor_pid"]
    assert host.systemctl("kill", "-s", "SIGKILL", "demo").returncode == 0
    wait_gone(supervisor)
    failed = host.systemctl("is-active", "demo")
    assert (failed.returncode, failed.stdout) == (3, "failed\n")
    assert len(host.runs()) == 1


@needs_root
def test_restart_always_restarts_after_a_clean_end(host: Host) -> None:
    host.write_unit(Restart="always")
    first = host.started()["pid"]
    assert host.systemctl("kill", "--signal", "TERM", "demo").returncode == 0
    assert restarted(host, first)["restarts"] == 1


@needs_root
def test_start_during_the_restart_wait_starts_at_once(host: Host) -> None:
    host.write_unit(RestartSec="30s")
    first = host.started()["pid"]
    assert host.systemctl("kill", "-s", "KILL", "demo").returncode == 0
    wait_for(lambda: host.state()["sub"] == "auto-restart", "the restart wait")
    began = time.monotonic()
    assert host.systemctl("start", "demo").returncode == 0
    assert time.monotonic() - began < 5
    assert host.state()["active"] == "active"
    assert host.state()["main_pid"] != first


@needs_root
def test_stop_and_cont_keep_the_main_process(host: Host) -> None:
    host.write_unit()
    pid = host.started()["pid"]
    assert host.systemctl("kill", "-s", "STOP", "demo").returncode == 0
    wait_for(lambda: process_state(pid) == "T", "the stop")
    time.sleep(3 * RESTART_SEC)  # a window for a wrong restart to show, not a synchronisation
    assert host.systemctl("is-active", "demo").stdout == "active\n"
    assert host.systemctl("kill", "-s", "CONT", "demo").returncode == 0
    wait_for(lambda: process_state(pid) != "T", "the continue")
    state = host.state()
    assert (state["active"], state["main_pid"], state["restarts"]) == ("active", pid, 0)


# --- stopping ----------------------------------------------------------------------------


@needs_root
def test_stop_escalates_to_sigkill_within_timeout_stop_sec(host: Host) -> None:
    host.write_unit(Environment="IGNORE_TERM=1", TimeoutStopSec="500ms")
    pid = host.started()["pid"]
    supervisor = host.state()["supervisor_pid"]
    began = time.monotonic()
    assert host.systemctl("stop", "demo").returncode == 0
    assert 0.5 <= time.monotonic() - began < 3
    assert not is_running(pid) and not is_running(supervisor)
    assert host.systemctl("show", "-p", "ActiveState,Result", "--value", "demo").stdout == (
        "failed\ntimeout\n"
    )
    assert "timed out. Killing." in host.log()


@needs_root
def test_stop_of_a_stopped_process_continues_it_to_see_the_kill_signal(host: Host) -> None:
    host.write_unit(Environment="EXIT_ON_TERM=1")  # a handler: SIGTERM alone would wait for CONT
    pid = host.started()["pid"]
    assert host.systemctl("kill", "-s", "STOP", "demo").returncode == 0
    wait_for(lambda: process_state(pid) == "T", "the stop")
    began = time.monotonic()
    assert host.systemctl("stop", "demo").returncode == 0
    assert time.monotonic() - began < 2  # TimeoutStopSec: no SIGKILL was needed
    assert not is_running(pid)
    assert host.systemctl("is-active", "demo").stdout == "inactive\n"


@needs_root
def test_a_dead_supervisor_reads_as_failed_and_stop_ends_its_orphan(host: Host) -> None:
    host.write_unit()
    pid = host.started()["pid"]
    supervisor = host.state()["supervisor_pid"]
    os.kill(supervisor, signal.SIGKILL)
    wait_gone(supervisor)
    assert host.systemctl("is-active", "demo").stdout == "failed\n"
    assert is_running(pid)
    assert host.systemctl("stop", "demo").returncode == 0
    assert not is_running(pid)
    assert host.systemctl("is-active", "demo").stdout == "inactive\n"


# --- Type=notify, the watchdog and RestartPreventExitStatus= ------------------------------

NOTIFY = {"Type": "notify", "Environment": "READY_AFTER=0.5", "TimeoutStartSec": "10"}


@needs_root
def test_notify_start_returns_once_ready_and_status_shows_the_status_text(host: Host) -> None:
    host.write_unit(**NOTIFY)
    began = time.monotonic()
    assert host.systemctl("start", "demo").returncode == 0
    assert time.monotonic() - began >= 0.5  # the service's delay before READY=1
    assert host.systemctl("is-active", "demo").stdout == "active\n"
    record = host.runs()[0]
    assert record["env"]["NOTIFY_SOCKET"].startswith("@unit-shim/demo.service/")
    assert "WATCHDOG_USEC" not in record["env"]
    status = host.systemctl("status", "demo").stdout
    assert 'Status: "serving, run 1"' in status
    show = host.systemctl("show", "-p", "StatusText", "--value", "demo")
    assert show.stdout == "serving, run 1\n"


@needs_root
def test_notify_start_fails_when_the_service_exits_before_ready(host: Host) -> None:
    host.write_unit(**NOTIFY, Restart="no", ExecStart="/bin/false")
    result = host.systemctl("start", "demo")
    assert result.returncode == 1
    assert result.stderr == (
        "Failed to start demo.service: the main process exited (code=exited, status=1)\n"
    )
    assert host.systemctl("show", "-p", "ActiveState,Result", "--value", "demo").stdout == (
        "failed\nexit-code\n"
    )


@needs_root
def test_notify_access_main_ignores_ready_from_a_child_until_start_times_out(
    host: Host,
) -> None:
    host.write_unit(
        **NOTIFY | {"Environment": "READY_AFTER=0 READY_FROM_CHILD=1", "TimeoutStartSec": "1"},
        Restart="no",
    )
    began = time.monotonic()
    result = host.systemctl("start", "demo")
    assert 1 <= time.monotonic() - began < 5
    assert result.returncode == 1
    assert "a timeout was exceeded (TimeoutStartSec=1s)" in result.stderr
    assert host.systemctl("show", "-p", "ActiveState,Result", "--value", "demo").stdout == (
        "failed\ntimeout\n"
    )
    assert "Got notification message from PID" in host.log()


@needs_root
def test_notify_access_all_takes_ready_from_a_child(host: Host) -> None:
    host.write_unit(
        **NOTIFY | {"Environment": "READY_AFTER=0 READY_FROM_CHILD=1"}, NotifyAccess="all"
    )
    assert host.systemctl("start", "demo").returncode == 0
    assert host.systemctl("is-active", "demo").stdout == "active\n"


WATCHDOG = NOTIFY | {"WatchdogSec": "1", "TimeoutStopSec": "1"}


@needs_root
def test_pings_keep_a_watched_service_and_its_watchdog_pid_is_its_own(host: Host) -> None:
    host.write_unit(**WATCHDOG | {"Environment": "READY_AFTER=0 PING=1"})
    record = host.started()
    assert record["env"]["WATCHDOG_USEC"] == "1000000"
    assert record["env"]["WATCHDOG_PID"] == str(record["pid"]) == str(host.state()["main_pid"])
    time.sleep(3)  # three watchdog periods: a window for a wrong kill to show
    state = host.state()
    assert (state["active"], state["main_pid"], state["restarts"]) == ("active", record["pid"], 0)


@needs_root
def test_a_stopped_service_misses_its_pings_and_is_aborted_and_restarted(host: Host) -> None:
    host.write_unit(**WATCHDOG | {"Environment": "READY_AFTER=0 PING=1"})
    first = host.started()["pid"]
    assert host.systemctl("kill", "-s", "STOP", "demo").returncode == 0
    state = restarted(host, first)
    assert state["restarts"] == 1
    log = host.log()
    assert "Watchdog timeout (limit 1s)!" in log
    assert f"Killing process {first} with signal SIGABRT." in log
    # The SIGCONT after SIGABRT (as systemd sends it) lets the stopped process take it.
    assert "code=killed, status=6/ABRT" in log


@needs_root
def test_a_watchdog_abort_that_is_ignored_ends_in_sigkill_after_timeout_abort_sec(
    host: Host,
) -> None:
    host.write_unit(
        **WATCHDOG | {"Environment": "READY_AFTER=0 PING=1 IGNORE_TERM=1"},
        WatchdogSignal="SIGTERM",
        TimeoutAbortSec="500ms",
        Restart="on-watchdog",
    )
    first = host.started()["pid"]
    assert host.systemctl("kill", "-s", "STOP", "demo").returncode == 0
    restarted(host, first)
    log = host.log()
    assert f"Killing process {first} with signal SIGTERM." in log
    assert "code=killed, status=9/KILL" in log


@needs_root
def test_restart_prevent_exit_status_leaves_a_usage_error_failed(host: Host) -> None:
    host.write_unit(Environment="FIRST_RUN_EXIT=2", RestartPreventExitStatus="2 SIGUSR1")
    host.started()
    assert wait_for(
        lambda: host.state()["active"] == "failed", "the unit to fail without a restart"
    )
    state = host.state()
    assert (state["result"], state["restarts"], len(host.runs())) == ("exit-code", 0, 1)
    assert "Scheduled restart job" not in host.log()


@needs_root
def test_the_real_chatnode_exits_2_on_a_bad_flag_and_its_unit_does_not_restart_it(
    host: Host,
) -> None:
    host.write_unit(
        **NOTIFY,
        ExecStart=f"{REPO}/.venv/bin/chatnode --no-such-flag",
        User=None,  # the venv may not be readable by nobody
        RestartPreventExitStatus=real_unit_setting("RestartPreventExitStatus"),
    )
    result = host.systemctl("start", "demo")
    assert result.stderr == (
        "Failed to start demo.service: the main process exited (code=exited, status=2)\n"
    )
    state = host.state()
    assert (state["active"], state["result"], state["restarts"]) == ("failed", "exit-code", 0)
    assert "unrecognized arguments: --no-such-flag" in host.log()


def real_unit_setting(key: str) -> str:
    """One [Service] setting of the shipped unit, deploy/systemd/chatnode.service."""
    text = (REPO / "deploy" / "systemd" / "chatnode.service").read_text()
    settings = unit_runner.collect_settings([text])
    return settings[("Service", key)][-1]
