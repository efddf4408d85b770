"""A small systemd stand-in: `systemctl` for test hosts built from network namespaces.

No systemd runs inside the namespaces, yet the deploy script drives every host with
`systemctl ...` against the real unit file, deploy/systemd/chatnode.service. This module
is that `systemctl` (through the tests/netns/bin/systemctl wrapper), so the unit file is
exercised as it will run in production rather than through a test-only launcher. It is
stdlib-only Python 3.11 because it runs under the host's /usr/bin/python3, outside the
project's venv.

Each started unit gets a detached supervisor process (`__supervise`, a hidden verb) that
runs ExecStart, waits for it, restarts it per Restart=, and stops it on SIGTERM. The
supervisor writes the unit's state to STATE_DIR/NAME/state.json (atomically); the
commands read it and talk to the supervisor through signals and pidfds only.

Emulated, as systemd does it:
  Type=exec/simple (`start` returns once the main process is exec'd, or fails with the
  reason); Type=notify: a NOTIFY_SOCKET per unit (an abstract AF_UNIX datagram socket),
  `start` returns once READY=1 arrives and fails when the main process exits first or
  TimeoutStartSec= passes (then KillSignal=, result `timeout`); STATUS= (shown by `status`
  and `show -p StatusText`); NotifyAccess= (none, main, exec as main, all; senders told
  apart by SO_PASSCRED); WatchdogSec= (WATCHDOG_USEC and WATCHDOG_PID set, the latter by a
  /bin/sh that execs ExecStart; armed at READY=1, or at the exec for other types; without
  WATCHDOG=1 in time: WatchdogSignal= (SIGABRT) plus SIGCONT, SIGKILL after
  TimeoutAbortSec= (default TimeoutStopSec=), result `watchdog`); RestartPreventExitStatus=
  (statuses and signal names); ExecStart= (quoting, $VAR and ${VAR} expansion),
  Environment=, EnvironmentFile= (`-` prefix, KEY=VALUE lines, # and ; comments, surrounding quotes,
  backslash continuations), a clean environment (PATH, and HOME/USER/LOGNAME/SHELL for
  User=; INVOCATION_ID, STATE_DIRECTORY), User=/Group= with supplementary groups, umask
  0022, WorkingDirectory= (`-` and `~`), StateDirectory=/StateDirectoryMode=,
  Restart= (no, always, on-success, on-failure, on-abnormal, on-abort, on-watchdog, with
  timeouts and watchdog kills counted as systemd counts them) and RestartSec=,
  KillSignal= (followed by SIGCONT) and TimeoutStopSec= (then SIGKILL), LimitNOFILE=,
  WantedBy= for enable/disable, drop-ins in NAME.service.d/*.conf, new session per
  service, stdout+stderr appended to LOG_DIR/NAME.log (our journal).
Rejected with an error (they would change what runs): Type= other than simple, exec and
  notify, ExecStart= prefixes (-@:+!), ExecStartPre/Post, ExecCondition, ExecReload,
  ExecStop, ExecStopPost, DynamicUser=, RootDirectory=, RootImage=.
Ignored: [Unit] dependencies and ordering (After=, Wants=, Requires=, ...), Description
  beyond `status`, Documentation=; all sandboxing and hardening (NoNewPrivileges=,
  ProtectSystem=, ProtectHome=, PrivateTmp=, ReadWritePaths=, ...); Limit* other than
  LimitNOFILE=; KillMode= (only the main process is signalled: there are no cgroups);
  SuccessExitStatus=, StartLimit*; notify messages other than READY=1, STATUS=,
  WATCHDOG=1 (STOPPING=1 is only logged; MAINPID=, WATCHDOG=trigger, WATCHDOG_USEC=,
  EXTEND_TIMEOUT_USEC= and fd passing are ignored); a start that fails is not retried
  by the waiting `start` (newer systemd keeps its job across auto-restarts: here `start`
  reports the first attempt, and the supervisor restarts per Restart=); [Install] other
  than WantedBy=; unit specifiers (%n, %i, ... are taken literally); TimeoutStopSec=infinity
  waits at most an hour.

Paths come from the environment so tests can run outside namespaces: UNIT_SHIM_UNIT_DIR
(/etc/systemd/system), UNIT_SHIM_STATE_DIR (/run/unit-shim), UNIT_SHIM_LOG_DIR
(/var/log/unit-shim), UNIT_SHIM_STATE_ROOT (/var/lib, for StateDirectory=).

Exit codes: 0 success, 1 failure (bad unit, failed start), 2 usage, 3 not active
(is-active, status), 4 no such unit (status).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import grp
import json
import math
import os
import pwd
import re
import resource
import select
import shlex
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CLEAN_SIGNALS = frozenset({signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE})
RESTART_POLICIES = (
    "no",
    "always",
    "on-success",
    "on-failure",
    "on-abnormal",
    "on-abort",
    "on-watchdog",
)
SERVICE_TYPES = ("simple", "exec", "notify")
NOTIFY_ACCESS = ("none", "main", "exec", "all")
REJECTED_SETTINGS = frozenset(
    [
        "ExecStartPre",
        "ExecStartPost",
        "ExecCondition",
        "ExecReload",
        "ExecStop",
        "ExecStopPost",
        "DynamicUser",
        "RootDirectory",
        "RootImage",
    ]
)
RUNNING_STATES = frozenset({"active", "activating", "deactivating"})
SUPERVISE_VERB = "__supervise"
# The supervisor blocks these and takes them with sigwaitinfo: no handler races.
SUPERVISOR_SIGNALS = frozenset({signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
REPORT_TIMEOUT_S = 30.0  # the supervisor's interpreter start plus the exec of ExecStart
TICK_S = 0.05  # how soon a supervisor watching a notify socket sees a stop (SIGTERM)
KILL_GRACE_S = 5.0  # after SIGKILL: only a process stuck in the kernel takes longer
STOP_MARGIN_S = 5.0  # the supervisor's own bookkeeping on top of its stop timeout
LOCK_TIMEOUT_S = 120.0  # another command on the same unit (a stop waits TimeoutStopSec)
INFINITY_S = 3600.0
TIME_UNITS_S = {"": 1.0} | {
    unit: seconds
    for seconds, units in [
        (1e-6, "us usec"),
        (1e-3, "ms msec"),
        (1.0, "s sec second seconds"),
        (60.0, "m min minute minutes"),
        (3600.0, "h hr hour hours"),
    ]
    for unit in units.split()
}
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
UNIT_NAME = re.compile(r"[A-Za-z0-9:_.@-]+")


class UnitError(Exception):
    """A problem with a unit or its processes; its text is the one line the user sees."""


class UsageError(Exception):
    """A malformed command line (exit 2)."""


# --- paths -------------------------------------------------------------------------------


PATH_DEFAULTS = {
    "UNIT_SHIM_UNIT_DIR": "/etc/systemd/system",
    "UNIT_SHIM_STATE_DIR": "/run/unit-shim",
    "UNIT_SHIM_LOG_DIR": "/var/log/unit-shim",
    "UNIT_SHIM_STATE_ROOT": "/var/lib",
}


def shim_path(variable: str) -> Path:
    """A configured directory, made absolute: the supervisor runs in / and links made by
    `enable` must not depend on the caller's working directory."""
    return Path(os.environ.get(variable, PATH_DEFAULTS[variable])).absolute()


def unit_dir() -> Path:
    return shim_path("UNIT_SHIM_UNIT_DIR")


def state_dir(name: str) -> Path:
    """STATE_DIR/NAME, created on first use: the state file and the command lock."""
    path = shim_path("UNIT_SHIM_STATE_DIR") / name
    path.mkdir(mode=0o755, parents=True, exist_ok=True)
    return path


def log_path(name: str) -> Path:
    directory = shim_path("UNIT_SHIM_LOG_DIR")
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    return directory / f"{name}.log"


def state_root() -> Path:
    return shim_path("UNIT_SHIM_STATE_ROOT")


def unit_name(arg: str) -> str:
    """`chatnode` and `chatnode.service` both name chatnode.service; nothing else is ours."""
    name = arg if arg.endswith(".service") else f"{arg}.service"
    if not UNIT_NAME.fullmatch(name) or name.startswith("."):
        raise UnitError(f"Invalid unit name: {arg}")
    return name


# --- the unit file -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Unit:
    """The settings of a service unit that this stand-in honours."""

    name: str
    path: Path
    description: str
    exec_start: tuple[str, ...]
    user: str | None
    group: str | None
    environment: dict[str, str]
    environment_files: tuple[str, ...]
    working_directory: str | None
    restart: str
    restart_sec: float
    restart_prevent: frozenset[tuple[str, int]]  # ("exit", status) and ("signal", number)
    kill_signal: int
    timeout_stop_s: float
    type: str
    notify_access: str
    timeout_start_s: float
    watchdog_s: float  # 0: off
    watchdog_signal: int
    timeout_abort_s: float
    state_directories: tuple[str, ...]
    state_directory_mode: int
    limit_nofile: tuple[int, int] | None
    wanted_by: tuple[str, ...]


def parse_assignments(text: str) -> Iterator[tuple[str, str, str]]:
    """Yield (section, key, value) from unit-file text: sections, # and ; comments, and
    lines continued by a trailing backslash (joined with a space, as systemd does)."""
    section, pending = "", ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        key, sep, value = line.partition("=")
        if sep:  # systemd warns about and skips a line without '='
            yield section, key.strip(), value.strip()


def collect_settings(texts: list[str]) -> dict[tuple[str, str], list[str]]:
    """Merge the unit file and its drop-ins: repeated keys accumulate, and an empty
    assignment resets the list (how a drop-in replaces ExecStart=)."""
    settings: dict[tuple[str, str], list[str]] = {}
    for text in texts:
        for section, key, value in parse_assignments(text):
            values = settings.setdefault((section, key), [])
            if value:
                values.append(value)
            else:
                values.clear()
    return settings


def parse_seconds(value: str, setting: str) -> float:
    """systemd time spans: `1`, `500ms`, `1min 30s`, `infinity`."""
    if value == "infinity":
        return INFINITY_S
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value)
    if not parts or re.sub(r"[\d.\sa-z]", "", value):
        raise UnitError(f"{setting}={value}: not a time span")
    try:
        return sum(float(number) * TIME_UNITS_S[unit] for number, unit in parts)
    except KeyError as error:
        raise UnitError(f"{setting}={value}: unknown time unit {error}") from None


def parse_signal(value: str) -> int:
    """A signal by name (KILL, SIGKILL) or number, as systemctl and unit files take it."""
    if value.isdigit() and int(value) in signal.valid_signals():
        return int(value)
    name = value.upper()
    try:
        return int(signal.Signals[name if name.startswith("SIG") else f"SIG{name}"])
    except KeyError:
        raise UnitError(f"Failed to parse signal string {value}.") from None


def parse_exit_statuses(words: tuple[str, ...]) -> frozenset[tuple[str, int]]:
    """RestartPreventExitStatus=: exit statuses (0-255) and signal names."""
    statuses = set()
    for word in words:
        if word.isdigit() and int(word) <= 255:
            statuses.add(("exit", int(word)))
        elif word.isdigit():
            raise UnitError(f"RestartPreventExitStatus={word}: not an exit status")
        else:
            statuses.add(("signal", parse_signal(word)))
    return frozenset(statuses)


def parse_limit(value: str) -> tuple[int, int]:
    """LimitNOFILE=: `N` (soft and hard), `SOFT:HARD`, `infinity`."""

    def one(text: str) -> int:
        return resource.RLIM_INFINITY if text == "infinity" else int(text)

    soft, _, hard = value.partition(":")
    try:
        return one(soft), one(hard or soft)
    except ValueError:
        raise UnitError(f"LimitNOFILE={value}: not a limit") from None


def parse_environment(values: list[str]) -> dict[str, str]:
    """Environment= lines: whitespace-separated, optionally quoted KEY=VALUE words."""
    env: dict[str, str] = {}
    for value in values:
        for word in shlex.split(value):
            key, sep, val = word.partition("=")
            if sep and ENV_NAME.fullmatch(key):
                env[key] = val
    return env


def parse_exec_start(values: list[str]) -> tuple[str, ...]:
    if len(values) != 1:
        raise UnitError(
            f"Service has {len(values)} ExecStart= settings, which is only allowed once"
        )
    if values[0][0] in "-@:+!":
        raise UnitError(f"ExecStart={values[0]}: command prefixes are not supported here")
    words = tuple(shlex.split(values[0]))
    if not words[0].startswith("/"):
        raise UnitError(f"Executable path is not absolute: {words[0]}")
    return words


def load_unit(name: str) -> Unit:
    """Read UNIT_DIR/NAME and its drop-ins; a bad setting is a UnitError naming it."""
    path = unit_dir() / name
    try:
        texts = [path.read_text()]
    except FileNotFoundError:
        raise UnitError(f"Unit {name} not found.") from None
    texts += [p.read_text() for p in sorted((unit_dir() / f"{name}.d").glob("*.conf"))]
    try:
        return build_unit(name, path, collect_settings(texts))
    except (UnitError, ValueError) as error:  # ValueError: unbalanced quotes, a bad mode
        raise UnitError(f"Unit {name} has a bad unit file setting: {error}") from None


def build_unit(name: str, path: Path, settings: dict[tuple[str, str], list[str]]) -> Unit:
    def get(key: str, section: str = "Service") -> str | None:
        values = settings.get((section, key))
        return values[-1] if values else None

    def words(key: str, section: str = "Service") -> tuple[str, ...]:
        return tuple(w for v in settings.get((section, key), []) for w in v.split())

    service = {k: v for (s, k), v in settings.items() if s == "Service" and v}
    rejected = sorted(service.keys() & REJECTED_SETTINGS)
    if rejected:
        raise UnitError(f"{rejected[0]}= is not supported by this systemctl stand-in")
    kind = get("Type") or "simple"
    if kind not in SERVICE_TYPES:
        raise UnitError(f"Type={kind} is not supported (simple, exec and notify are)")
    restart = get("Restart") or "no"
    if restart not in RESTART_POLICIES:
        raise UnitError(f"Failed to parse service restart specifier: {restart}")
    limit = get("LimitNOFILE")
    timeout_stop_s = parse_seconds(get("TimeoutStopSec") or "90s", "TimeoutStopSec")
    watchdog_s = parse_seconds(get("WatchdogSec") or "0", "WatchdogSec")
    # systemd: main when the service notifies (Type=notify or a watchdog), else none.
    notify_access = get("NotifyAccess") or ("main" if kind == "notify" or watchdog_s else "none")
    if notify_access not in NOTIFY_ACCESS:
        raise UnitError(f"Failed to parse notify access specifier: {notify_access}")
    return Unit(
        name=name,
        path=path,
        description=get("Description", section="Unit") or name,
        exec_start=parse_exec_start(service.get("ExecStart", [])),
        user=get("User"),
        group=get("Group"),
        environment=parse_environment(service.get("Environment", [])),
        environment_files=tuple(service.get("EnvironmentFile", [])),
        working_directory=get("WorkingDirectory"),
        restart=restart,
        restart_sec=parse_seconds(get("RestartSec") or "100ms", "RestartSec"),
        restart_prevent=parse_exit_statuses(words("RestartPreventExitStatus")),
        kill_signal=parse_signal(get("KillSignal") or "SIGTERM"),
        timeout_stop_s=timeout_stop_s,
        type=kind,
        notify_access=notify_access,
        timeout_start_s=parse_seconds(get("TimeoutStartSec") or "90s", "TimeoutStartSec"),
        watchdog_s=watchdog_s,
        watchdog_signal=parse_signal(get("WatchdogSignal") or "SIGABRT"),
        timeout_abort_s=parse_seconds(get("TimeoutAbortSec"), "TimeoutAbortSec")
        if get("TimeoutAbortSec")
        else timeout_stop_s,
        state_directories=words("StateDirectory"),
        state_directory_mode=int(get("StateDirectoryMode") or "0755", 8),
        limit_nofile=parse_limit(limit) if limit else None,
        wanted_by=words("WantedBy", section="Install"),
    )


def parse_env_file(text: str) -> dict[str, str]:
    """systemd's EnvironmentFile= syntax, one assignment a line: `#`/`;` comments, blank
    lines, surrounding single quotes (literal) or double quotes (\\ escapes \\"`$), a
    trailing backslash continues the line. Quoted values spanning lines are not supported."""
    env: dict[str, str] = {}
    pending = ""
    for raw in text.splitlines():
        line = pending + raw
        if re.search(r"(?<!\\)(\\\\)*\\$", line):
            pending = line[:-1]
            continue
        pending = ""
        line = line.strip()
        key, sep, value = line.partition("=")
        if not line or line[0] in "#;" or not sep or not ENV_NAME.fullmatch(key.strip()):
            continue
        env[key.strip()] = unquote_env_value(value.strip())
    return env


def unquote_env_value(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r'\\([\\"`$])', r"\1", value[1:-1])
    return re.sub(r"\\(.)", r"\1", value)


# --- what the main process gets ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Credentials:
    uid: int
    gid: int
    groups: tuple[int, ...]
    name: str
    home: str
    shell: str


def credentials(unit: Unit) -> Credentials | None:
    """User=/Group= resolved like systemd: the group defaults to the user's primary
    group, supplementary groups come from the group database (initgroups)."""
    if unit.user is None and unit.group is None:
        return None
    spec = unit.user or "root"
    try:
        user = pwd.getpwuid(int(spec)) if spec.isdigit() else pwd.getpwnam(spec)
    except KeyError:
        raise UnitError(f"Failed to determine user credentials: no user {spec}") from None
    gid = user.pw_gid
    if unit.group is not None:
        try:
            gid = int(unit.group) if unit.group.isdigit() else grp.getgrnam(unit.group).gr_gid
        except KeyError:
            raise UnitError(
                f"Failed to determine group credentials: no group {unit.group}"
            ) from None
    groups = tuple(os.getgrouplist(user.pw_name, gid))
    return Credentials(user.pw_uid, gid, groups, user.pw_name, user.pw_dir, user.pw_shell)


def service_environment(
    unit: Unit, creds: Credentials | None, notify: dict[str, str]
) -> dict[str, str]:
    """systemd's order: its own variables (notify's among them), then Environment=, then
    EnvironmentFile=."""
    env = {"PATH": DEFAULT_PATH, "INVOCATION_ID": uuid.uuid4().hex} | notify
    if creds is not None and unit.user is not None:
        env |= {"HOME": creds.home, "USER": creds.name, "LOGNAME": creds.name, "SHELL": creds.shell}
    if unit.state_directories:
        env["STATE_DIRECTORY"] = ":".join(str(state_root() / d) for d in unit.state_directories)
    env |= unit.environment
    for entry in unit.environment_files:
        optional, file = entry.startswith("-"), entry.removeprefix("-")
        try:
            env |= parse_env_file(Path(file).read_text())
        except FileNotFoundError:
            if not optional:
                raise UnitError(f"Failed to load environment files: {file} not found") from None
    return env


def expand_command(words: tuple[str, ...], env: dict[str, str]) -> list[str]:
    """ExecStart= variables: a lone $VAR splits into words, ${VAR} is one word, $$ is $."""
    argv: list[str] = []
    for word in words:
        lone = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if lone:
            argv += env.get(lone.group(1), "").split()
            continue
        braced = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word)
        argv.append(braced.replace("$$", "$"))
    return argv


def make_state_directories(unit: Unit, creds: Credentials | None) -> None:
    for relative in unit.state_directories:
        path = state_root() / relative
        path.mkdir(parents=True, exist_ok=True)
        if creds is not None:
            os.chown(path, creds.uid, creds.gid)
        path.chmod(unit.state_directory_mode)


def working_directory(unit: Unit, creds: Credentials | None) -> str:
    if unit.working_directory is None:
        return "/"
    optional, path = unit.working_directory.startswith("-"), unit.working_directory.lstrip("-")
    if path == "~":
        path = creds.home if creds else pwd.getpwuid(0).pw_dir
    return "/" if optional and not os.path.isdir(path) else path


def set_nofile_limit(unit_name: str, wanted: tuple[int, int]) -> None:
    """LimitNOFILE=, capped at this machine's hard limit where that cannot be raised (a
    container's limit binds root too; systemd as PID 1 outside one would raise it)."""
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, wanted)
    except (ValueError, OSError):
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        capped = tuple(hard if hard != resource.RLIM_INFINITY and v > hard else v for v in wanted)
        log(unit_name, f"LimitNOFILE={wanted[1]} is above the hard limit here; using {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, capped)


# systemd sets WATCHDOG_PID in the forked child, whose pid Popen cannot know before the
# exec; a shell that exports its own pid and execs the command keeps that pid. (A command
# that cannot be exec'd then shows as the shell's exit 126 or 127, not as a failed start.)
WATCHDOG_PID_SHIM = ("/bin/sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"', "sh")


def spawn(unit: Unit, notify: dict[str, str]) -> subprocess.Popen[bytes]:
    """Exec ExecStart as systemd would, with notify's variables (NOTIFY_SOCKET, ...);
    returns once the exec has succeeded (Popen waits for it), raises the reason otherwise."""
    creds = credentials(unit)
    env = service_environment(unit, creds, notify)
    make_state_directories(unit, creds)
    cwd = working_directory(unit, creds)
    if unit.limit_nofile is not None:  # set here, as root: the child inherits it
        set_nofile_limit(unit.name, unit.limit_nofile)
    argv = expand_command(unit.exec_start, env)
    if unit.watchdog_s:
        argv = [*WATCHDOG_PID_SHIM, *argv]
    try:
        return subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            umask=0o022,
            user=creds.uid if creds else None,
            group=creds.gid if creds else None,
            extra_groups=list(creds.groups) if creds else None,
            preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_SETMASK, set()),
        )
    except OSError as error:
        if error.filename == cwd:
            raise UnitError(
                f"Changing to the requested working directory failed: {error.strerror}"
            ) from None
        raise UnitError(f"Failed to execute {argv[0]}: {error.strerror}") from None


# --- processes ---------------------------------------------------------------------------


def process_start(pid: int) -> int | None:
    """The start time of a live (not zombie) process, which tells it apart from a later
    process that reuses its pid."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if fields[0] in "ZXx" else int(fields[19])


def open_process(pid: int, start: int) -> int | None:
    """A pidfd for the process recorded as (pid, start), or None when it is gone. The
    pidfd pins the process, so the check after opening it cannot be fooled by pid reuse."""
    if pid <= 0:
        return None
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    if process_start(pid) != start:
        os.close(fd)
        return None
    return fd


def is_alive(pid: int, start: int) -> bool:
    fd = open_process(pid, start)
    if fd is not None:
        os.close(fd)
    return fd is not None


def wait_exit(pidfd: int, timeout_s: float) -> bool:
    """True once the process has exited, False when timeout_s passed first."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(max(0.0, timeout_s) * 1000))


def send_signal(pidfd: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it has just exited: nothing to signal
        signal.pidfd_send_signal(pidfd, sig)


def terminate(pidfd: int, kill_signal: int, timeout_s: float) -> bool:
    """systemd's stop: KillSignal plus SIGCONT (a stopped process must see it), then
    SIGKILL after timeout_s. True when SIGKILL was needed."""
    send_signal(pidfd, kill_signal)
    if kill_signal not in (signal.SIGKILL, signal.SIGCONT):
        send_signal(pidfd, signal.SIGCONT)
    if wait_exit(pidfd, timeout_s):
        return False
    send_signal(pidfd, signal.SIGKILL)
    wait_exit(pidfd, KILL_GRACE_S)
    return True


def describe_status(status: int) -> str:
    """As systemd logs an exit: `code=exited, status=3`, `code=killed, status=9/KILL`."""
    if not os.WIFSIGNALED(status):
        return f"code=exited, status={os.WEXITSTATUS(status)}"
    sig = os.WTERMSIG(status)
    try:
        return f"code=killed, status={sig}/{signal.Signals(sig).name.removeprefix('SIG')}"
    except ValueError:  # a real-time signal has no name
        return f"code=killed, status={sig}"


def is_clean_exit(status: int) -> bool:
    """systemd's clean exit for a daemon: status 0 or SIGHUP, SIGINT, SIGTERM, SIGPIPE."""
    if os.WIFSIGNALED(status):
        return os.WTERMSIG(status) in CLEAN_SIGNALS
    return os.WEXITSTATUS(status) == 0


def should_restart(unit: Unit, result: str, status: int) -> bool:
    """Restart= for an end with this result (success, exit-code, signal, timeout or
    watchdog, as ended() and the supervisor name them), unless RestartPreventExitStatus=
    names the exit status or signal."""
    if os.WIFSIGNALED(status):
        if ("signal", os.WTERMSIG(status)) in unit.restart_prevent:
            return False
    elif ("exit", os.WEXITSTATUS(status)) in unit.restart_prevent:
        return False
    return {
        "no": False,
        "always": True,
        "on-success": result == "success",
        "on-failure": result != "success",
        "on-abnormal": result in ("signal", "timeout", "watchdog"),
        "on-abort": result == "signal",
        "on-watchdog": result == "watchdog",
    }[unit.restart]


# --- state -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class State:
    """STATE_DIR/NAME/state.json, written by the supervisor (and by `stop` when it clears
    up after a supervisor that died). Processes are (pid, start time) pairs."""

    active: str = "inactive"
    sub: str = "dead"
    result: str = "success"
    supervisor_pid: int = 0
    supervisor_start: int = 0
    main_pid: int = 0
    main_start: int = 0
    restarts: int = 0
    kill_signal: int = int(signal.SIGTERM)
    timeout_stop_s: float = 90.0
    status_text: str = ""  # the last STATUS= the service sent


def read_state(name: str) -> State:
    try:
        data = json.loads((state_dir(name) / "state.json").read_text())
    except FileNotFoundError:
        return State()
    return State(**data)


def write_state(name: str, state: State) -> None:
    """Atomic: a reader sees the old state or the new one, never half of one."""
    directory = state_dir(name)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".state.")
    with os.fdopen(fd, "w") as file:
        json.dump(dataclasses.asdict(state), file)
    os.replace(tmp, directory / "state.json")


def effective_state(name: str) -> State:
    """The recorded state, unless its supervisor died mid-run: then the unit failed."""
    state = read_state(name)
    if state.active in RUNNING_STATES and not is_alive(
        state.supervisor_pid, state.supervisor_start
    ):
        return dataclasses.replace(
            state, active="failed", sub="failed", result="supervisor-lost", main_pid=0
        )
    return state


@contextlib.contextmanager
def unit_lock(name: str) -> Iterator[None]:
    """One changing command per unit at a time (two `start`s would start two services);
    waiting for it is bounded by a timer, since flock has no timeout of its own."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError

    with open(state_dir(name) / "lock", "a") as file:
        previous = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, LOCK_TIMEOUT_S)
        try:
            fcntl.flock(file, fcntl.LOCK_EX)
        except TimeoutError:
            raise UnitError(f"Another command held {name} for {LOCK_TIMEOUT_S:.0f} s") from None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        yield


# --- the supervisor ----------------------------------------------------------------------


def log(name: str, message: str) -> None:
    """A journal line in the unit's log (the supervisor's stderr is that file)."""
    stamp = time.strftime("%b %d %H:%M:%S")
    print(f"{stamp} unit-shim[{os.getpid()}]: {name}: {message}", file=sys.stderr, flush=True)


def stop_requested_within(seconds: float) -> bool:
    """The RestartSec wait: True when a stop (SIGTERM) arrived before it ended."""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        if signal.sigtimedwait({signal.SIGTERM}, remaining) is not None:
            return True
    return False


def ended(status: int) -> tuple[str, str, str]:
    """(active, sub, result) after the main process ended with this wait status."""
    if is_clean_exit(status):
        return "inactive", "dead", "success"
    return "failed", "failed", "signal" if os.WIFSIGNALED(status) else "exit-code"


def stop_main(unit: Unit, child: subprocess.Popen[bytes], pidfd: int) -> tuple[str, str, str]:
    """Stop and reap the main process: (active, sub, result) afterwards. A stop that
    needed SIGKILL is a failure with result `timeout`, as in systemd."""
    killed = terminate(pidfd, unit.kill_signal, unit.timeout_stop_s)
    if killed:
        log(unit.name, "State 'stop-sigterm' timed out. Killing.")
    if not wait_exit(pidfd, 0):
        log(unit.name, f"Main process {child.pid} survived SIGKILL; leaving it behind")
        return "failed", "failed", "timeout"
    _, status = os.waitpid(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    log(unit.name, f"Main process exited, {describe_status(status)}")
    if killed:
        return "failed", "failed", "timeout"
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == unit.kill_signal:
        return "inactive", "dead", "success"
    return ended(status)


class NotifySocket:
    """The unit's NOTIFY_SOCKET: an abstract-namespace datagram socket (no path to grow
    past 108 bytes or to chmod for User=), kept across restarts. SO_PASSCRED makes the
    kernel stamp each datagram with its sender's pid, which NotifyAccess= checks."""

    def __init__(self, unit: Unit) -> None:
        self.unit = unit
        self.name = f"@unit-shim/{unit.name}/{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(b"\0" + self.name[1:].encode())
        self.sock.setblocking(False)

    def environment(self) -> dict[str, str]:
        env = {"NOTIFY_SOCKET": self.name}
        if self.unit.watchdog_s:
            env["WATCHDOG_USEC"] = str(round(self.unit.watchdog_s * 1e6))
        return env

    def receive(self, main_pid: int) -> Iterator[dict[str, str]]:
        """The queued messages NotifyAccess= lets through, as KEY=VALUE dicts."""
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except BlockingIOError:
                return
            sender = next(
                (
                    struct.unpack("3i", cdata[:12])[0]
                    for level, kind, cdata in ancillary
                    if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)
                ),
                0,
            )
            if self.unit.notify_access == "all" or sender == main_pid:
                lines = data.decode(errors="replace").split("\n")
                yield dict(line.split("=", 1) for line in lines if "=" in line)
            else:
                log(self.unit.name, f"Got notification message from PID {sender}, ignoring.")


class Supervisor:
    """Runs one unit from its first start until it is stopped or ends for good. It is
    the main process's parent, so it alone waits for it; commands reach it by SIGTERM
    (stop) and read what it records in the state file."""

    def __init__(self, unit: Unit, report_fd: int) -> None:
        self.unit = unit
        self.report_fd: int | None = report_fd
        self.restarts = 0
        self.status_text = ""
        self.identity = {
            "supervisor_pid": os.getpid(),
            "supervisor_start": process_start(os.getpid()) or 0,
        }
        self.notify = NotifySocket(unit) if unit.notify_access != "none" else None

    def record(
        self,
        active: str,
        sub: str,
        result: str = "success",
        child: subprocess.Popen[bytes] | None = None,
    ) -> None:
        fields: dict[str, int] = dict(self.identity) if active in RUNNING_STATES else {}
        if child is not None:
            fields |= {"main_pid": child.pid, "main_start": process_start(child.pid) or 0}
        limits = {"kill_signal": self.unit.kill_signal, "timeout_stop_s": self.unit.timeout_stop_s}
        state = State(
            active, sub, result, restarts=self.restarts, status_text=self.status_text, **fields
        )
        write_state(self.unit.name, dataclasses.replace(state, **limits))

    def report(self, line: str) -> None:
        """Tell the waiting `start` how the first start went (once; later ones are ours)."""
        if self.report_fd is not None:
            os.write(self.report_fd, line.encode() + b"\n")
            os.close(self.report_fd)
            self.report_fd = None

    def run(self) -> int:
        while True:
            self.record("activating", "start")
            try:
                child = spawn(self.unit, self.notify.environment() if self.notify else {})
            except (UnitError, OSError, ValueError, subprocess.SubprocessError) as error:
                log(self.unit.name, f"Failed to start: {error}")
                self.record("failed", "failed", "resources")
                self.report(f"error {error}")
                return 1
            if self.unit.type == "notify":
                self.record("activating", "start", child=child)
            else:
                self.started(child)
            if not self.run_once(child):
                return 0
            self.restarts += 1
            log(self.unit.name, f"Scheduled restart job, restart counter is at {self.restarts}.")

    def started(self, child: subprocess.Popen[bytes]) -> None:
        """The exec (Type=exec/simple) or READY=1 (Type=notify): the unit is active."""
        self.record("active", "running", child=child)
        log(self.unit.name, f"Started {self.unit.description} (main PID {child.pid}).")
        self.report("ok")

    def run_once(self, child: subprocess.Popen[bytes]) -> bool:
        """Supervise one main process until it ends or a stop; True when it is to be
        restarted."""
        pidfd = os.pidfd_open(child.pid)  # not reaped yet, so this is surely our child
        try:
            event = self.watch(child, pidfd)
            if event == "stop":
                self.report("error it was stopped before it reported READY=1")
                self.record("deactivating", "stop-sigterm", child=child)
                self.record(*stop_main(self.unit, child, pidfd))
                return False
            if event == "timeout":
                log(self.unit.name, "start operation timed out. Terminating.")
                self.report(
                    f"error a timeout was exceeded (TimeoutStartSec={self.unit.timeout_start_s:g}s)"
                )
                terminate(pidfd, self.unit.kill_signal, self.unit.timeout_stop_s)
            if event == "watchdog":
                log(self.unit.name, f"Watchdog timeout (limit {self.unit.watchdog_s:g}s)!")
                sig = signal.Signals(self.unit.watchdog_signal).name
                log(self.unit.name, f"Killing process {child.pid} with signal {sig}.")
                terminate(pidfd, self.unit.watchdog_signal, self.unit.timeout_abort_s)
            _, status = os.waitpid(child.pid, 0)
        finally:
            os.close(pidfd)
        child.returncode = os.waitstatus_to_exitcode(status)  # so Popen never reaps a reused pid
        log(self.unit.name, f"Main process exited, {describe_status(status)}")
        result = ended(status)[2] if event == "exit" else event
        self.report(f"error the main process exited ({describe_status(status)})")
        if not should_restart(self.unit, result, status):
            self.record(*(ended(status) if result == "success" else ("failed", "failed", result)))
            return False
        self.record("activating", "auto-restart")
        if stop_requested_within(self.unit.restart_sec):
            self.record("inactive", "dead")
            return False
        return True

    def watch(self, child: subprocess.Popen[bytes], pidfd: int) -> str:
        """Wait for what ends this main process's run: `exit`, `stop` (SIGTERM), `timeout`
        (no READY=1 within TimeoutStartSec=) or `watchdog` (no WATCHDOG=1 within
        WatchdogSec=). The service's lifetime, so unbounded; READY=1 makes the unit active."""
        starting = self.unit.type == "notify"
        deadline = self.deadline(self.unit.timeout_start_s if starting else self.unit.watchdog_s)
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if self.notify is not None:
            poller.register(self.notify.sock, select.POLLIN)
        while True:
            # Signals stay blocked (no handler races), so a stop is polled for each tick.
            if signal.sigtimedwait({signal.SIGTERM}, 0) is not None:
                return "stop"
            if time.monotonic() >= deadline:
                return "timeout" if starting else "watchdog"
            wait_s = min(TICK_S, deadline - time.monotonic())
            events = dict(poller.poll(max(0.0, wait_s) * 1000))
            if pidfd in events:
                return "exit"
            if not events or self.notify is None:
                continue
            for message in self.notify.receive(child.pid):
                if "STATUS" in message:
                    self.status_text = message["STATUS"]
                    self.record(
                        *("activating", "start") if starting else ("active", "running"), child=child
                    )
                if message.get("READY") == "1" and starting:
                    starting = False
                    self.started(child)
                    deadline = self.deadline(self.unit.watchdog_s)
                elif message.get("WATCHDOG") == "1" and not starting:
                    deadline = self.deadline(self.unit.watchdog_s)
                if message.get("STOPPING") == "1":
                    log(self.unit.name, "The service is stopping.")

    @staticmethod
    def deadline(seconds: float) -> float:
        """A monotonic deadline seconds from now; 0 seconds is none."""
        return time.monotonic() + seconds if seconds else math.inf


def supervise(name: str, report_fd: int) -> int:
    """The hidden `__supervise NAME FD` verb, run detached by `start`."""
    signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISOR_SIGNALS)
    try:
        unit = load_unit(name)
    except UnitError as error:
        os.write(report_fd, f"error {error}\n".encode())
        return 1
    return Supervisor(unit, report_fd).run()


# --- the verbs ---------------------------------------------------------------------------


def stop_locked(name: str) -> None:
    """Stop a unit whose lock we hold: ask its supervisor (SIGTERM) and wait for it to
    exit; if the supervisor died, stop its orphaned main process ourselves."""
    state = read_state(name)
    supervisor = open_process(state.supervisor_pid, state.supervisor_start)
    if supervisor is not None:
        try:
            send_signal(supervisor, signal.SIGTERM)
            bound = state.timeout_stop_s + KILL_GRACE_S + STOP_MARGIN_S
            if not wait_exit(supervisor, bound):
                raise UnitError(
                    f"Failed to stop {name}: its supervisor did not exit in {bound:.0f} s"
                )
        finally:
            os.close(supervisor)
        return
    orphan = open_process(state.main_pid, state.main_start)
    if orphan is not None:
        try:
            terminate(orphan, state.kill_signal, state.timeout_stop_s)
        finally:
            os.close(orphan)
    if state.active in RUNNING_STATES:
        write_state(name, State(restarts=state.restarts))


def start_locked(name: str) -> None:
    """Start a unit whose lock we hold, unless it runs already. A unit waiting to restart
    (or left behind by a dead supervisor) is stopped first, then started right away."""
    unit = load_unit(name)  # a bad unit fails here, before anything runs
    if effective_state(name).active == "active":
        return
    stop_locked(name)
    read_fd, write_fd = os.pipe()
    try:
        with open(log_path(name), "ab") as log_file:
            supervisor = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), SUPERVISE_VERB, name, str(write_fd)],
                pass_fds=(write_fd,),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                cwd="/",
                env=os.environ | {v: str(shim_path(v)) for v in PATH_DEFAULTS},
                start_new_session=True,
            )
    finally:
        os.close(write_fd)
    try:
        line = read_report(read_fd, report_timeout_s(unit))
    finally:
        os.close(read_fd)
    if line == "ok":
        return
    if line is None:
        supervisor.kill()
        line = f"error its supervisor did not report within {report_timeout_s(unit):.0f} s"
    raise UnitError(line.removeprefix("error ").strip() or "its supervisor exited without a word")


def report_timeout_s(unit: Unit) -> float:
    """How long `start` waits for the supervisor's word: for Type=notify, READY=1 may
    take TimeoutStartSec=, and a start that timed out is then stopped."""
    if unit.type != "notify":
        return REPORT_TIMEOUT_S
    return REPORT_TIMEOUT_S + unit.timeout_start_s + unit.timeout_stop_s + KILL_GRACE_S


def read_report(fd: int, timeout_s: float) -> str | None:
    """The supervisor's one line, '' if it exited without one, None on timeout."""
    deadline = time.monotonic() + timeout_s
    data = b""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poller.poll(remaining * 1000):
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


def wants_links(name: str) -> list[Path]:
    return sorted(unit_dir().glob(f"*.wants/{name}"))


def enable(name: str) -> None:
    unit = load_unit(name)
    if not unit.wanted_by:
        print(
            f"The unit files have no installation config (WantedBy=) for {name}.", file=sys.stderr
        )
    for target in unit.wanted_by:
        link = unit_dir() / f"{target}.wants" / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(unit.path)
            print(f"Created symlink {link} \u2192 {unit.path}.", file=sys.stderr)


def disable(name: str) -> None:
    for link in wants_links(name):
        link.unlink()
        print(f'Removed "{link}".', file=sys.stderr)


def enabled_state(name: str) -> str:
    if wants_links(name):
        return "enabled"
    try:
        return "disabled" if load_unit(name).wanted_by else "static"
    except UnitError:
        return "not-found"


def properties(name: str) -> dict[str, str]:
    state = effective_state(name)
    return {
        "Id": name,
        "LoadState": "loaded" if (unit_dir() / name).exists() else "not-found",
        "ActiveState": state.active,
        "SubState": state.sub,
        "Result": state.result,
        "MainPID": str(state.main_pid),
        "NRestarts": str(state.restarts),
        "StatusText": state.status_text,
        "UnitFileState": enabled_state(name),
    }


def status(name: str) -> int:
    try:
        unit = load_unit(name)
    except UnitError:
        print(f"Unit {name} could not be found.", file=sys.stderr)
        return 4
    state = effective_state(name)
    dot = {"active": "\u25cf", "failed": "\u00d7"}.get(state.active, "\u25cb")
    print(f"{dot} {name} - {unit.description}")
    print(f"     Loaded: loaded ({unit.path}; {enabled_state(name)})")
    result = f" (Result: {state.result})" if state.active == "failed" else f" ({state.sub})"
    print(f"     Active: {state.active}{result}")
    if state.main_pid:
        print(f"   Main PID: {state.main_pid}")
    if state.status_text and state.active in RUNNING_STATES:
        print(f'     Status: "{state.status_text}"')
    print(f"   Restarts: {state.restarts}")
    return 0 if state.active == "active" else 3


@dataclasses.dataclass
class Options:
    now: bool = False
    quiet: bool = False
    value: bool = False
    sig: int = int(signal.SIGTERM)
    properties: list[str] = dataclasses.field(default_factory=list)


FLAGS = {"--now": "now", "--quiet": "quiet", "-q": "quiet", "--value": "value"}
ACCEPTED_NOOPS = frozenset({"--no-pager", "--no-ask-password", "--system", "--full", "-l"})
WITH_VALUE = {"-s": "sig", "--signal": "sig", "-p": "properties", "--property": "properties"}
VERBS = frozenset(
    [
        "daemon-reload",
        "enable",
        "disable",
        "start",
        "stop",
        "restart",
        "is-active",
        "is-enabled",
        "kill",
        "status",
        "show",
    ]
)


def parse_args(argv: list[str]) -> tuple[str, list[str], Options]:
    """systemctl's command line: options anywhere, then a verb and its units."""
    options, positional = Options(), []
    args = iter(argv)
    for arg in args:
        key, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if arg == "--":
            positional += list(args)
        elif key in WITH_VALUE:
            if not eq:
                value = next(args, "")
                if not value:
                    raise UsageError(f"option '{arg}' requires an argument")
            if WITH_VALUE[key] == "sig":
                try:
                    options.sig = parse_signal(value)
                except UnitError as error:
                    raise UsageError(str(error)) from None
            else:
                options.properties += [p for p in value.split(",") if p]
        elif arg in FLAGS:
            setattr(options, FLAGS[arg], True)
        elif arg in ACCEPTED_NOOPS:
            pass
        elif arg.startswith("-"):
            raise UsageError(f"unrecognized option '{arg}'")
        else:
            positional.append(arg)
    if not positional:
        raise UsageError("too few arguments: a verb is needed")
    verb, units = positional[0], positional[1:]
    if verb not in VERBS:
        raise UsageError(f"Unknown command verb '{verb}'.")
    if verb != "daemon-reload" and not units:
        raise UsageError(f"Too few arguments: '{verb}' needs a unit.")
    return verb, units, options


def run_verb(verb: str, name: str, options: Options) -> int:
    """One verb on one unit; the exit code systemctl would give for it."""
    if verb in ("start", "stop", "restart", "enable", "disable"):
        if verb == "enable":
            try:
                enable(name)
            except UnitError as error:
                raise UnitError(f"Failed to enable unit: {error}") from None
        if verb == "disable":
            disable(name)
        with unit_lock(name):
            if verb in ("stop", "restart") or (verb == "disable" and options.now):
                stop_locked(name)
            if verb in ("start", "restart") or (verb == "enable" and options.now):
                try:
                    start_locked(name)
                except UnitError as error:
                    raise UnitError(f"Failed to start {name}: {error}") from None
        return 0
    if verb == "is-active":
        state = effective_state(name).active
        if not options.quiet:
            print(state)
        return 0 if state == "active" else 3
    if verb == "is-enabled":
        state = enabled_state(name)
        if not options.quiet:
            print(state)
        return 0 if state in ("enabled", "static") else 1
    if verb == "kill":
        return kill(name, options.sig)
    if verb == "status":
        return status(name)
    props = properties(name)  # show
    for prop in options.properties or list(props):
        if prop in props:
            print(props[prop] if options.value else f"{prop}={props[prop]}")
    return 0


def kill(name: str, sig: int) -> int:
    """Signal the main process only; the unit's wanted state stays as it is, so the
    supervisor reacts to the exit (if any) per Restart=."""
    state = effective_state(name)
    pidfd = open_process(state.main_pid, state.main_start)
    if pidfd is None:
        raise UnitError(f"Failed to kill unit {name}: No main process to kill")
    try:
        signal.pidfd_send_signal(pidfd, sig)
    finally:
        os.close(pidfd)
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == [SUPERVISE_VERB]:
        return supervise(argv[1], int(argv[2]))
    try:
        verb, units, options = parse_args(argv)
    except UsageError as error:
        print(f"systemctl: {error}", file=sys.stderr)
        return 2
    if verb == "daemon-reload":
        return 0
    worst = 0
    for arg in units:
        try:
            code = run_verb(verb, unit_name(arg), options)
        except UnitError as error:
            print(error, file=sys.stderr)
            code = 1
        except OSError as error:  # e.g. no permission for the state or unit directory
            print(f"Failed to {verb} {arg}: {error}", file=sys.stderr)
            code = 1
        worst = max(worst, code)
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
