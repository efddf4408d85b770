"""Test hosts on this machine: network namespaces on one bridge, each with its own files.

Each host is a network namespace with its own address on a private bridge
(10.77.0.0/24, inside a switch namespace, so the machine's own network is not
touched) and a persistent mount namespace in which /etc, /var, /opt and
/usr/local are overlays of the machine's own: a host's /etc/chat, /var/lib/chat, /opt/chat, its
``chat`` user and its unit files are its own, and the upper layers sit in the
lab's folder, so the test can read a host's files without entering it.

The exec seam is an ssh stand-in (``bin/ssh`` in the lab folder): ``ssh
root@10.77.0.11 COMMAND...`` runs COMMAND with ``sh -c`` inside that host, with
stdin and stdout passed through, as ssh would (``USER@`` logs in as that user of the
host, ``runuser``, in its home); ``deploy/cluster.sh`` runs
unchanged against these hosts with ``CHAT_SSH`` pointing at it. On the hosts,
``systemctl`` is ``tests/netns/unit_runner.py``, which runs the unit the way
systemd does (EnvironmentFile, ExecStart, User=chat).

Faults are nft rules inside the hosts (drop, so a cut link times out as a
real one does); slow links go through a delaying TCP proxy on every host
(``tests/netns/delay_proxy.py``), which nft's NAT puts between a host and its
peers' ports when the lab is made with ``delays=True``.

:func:`unavailable` says why a lab cannot be built here (not root, a tool
missing); a :class:`Lab` removes every namespace, mount and process it made
when its ``with`` block ends, also when a test fails, and a new lab first
removes what a killed run left behind.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SUBNET = "10.77.0"
PORT = 7001
CLIENT_PORT = 7000  # with two listeners: where chat users call, PORT being the peers'
PROXY_MARK = 0x77  # the delay proxy's own connections carry it and are not redirected
OVERLAID = ("etc", "var", "opt", "usr/local")  # not /run: /run/netns must stay visible
HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SHIM_BIN = HERE / "bin"
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TOOLS = ("ip", "nsenter", "unshare", "nft", "mount", "umount")
PREFIX = "chl"  # namespace names: chl<pid>.<lab>-<host>; a dead pid marks leftovers
RUN_TIMEOUT_S = 120.0
_LAB_NUMBERS = itertools.count(1)


def unavailable() -> str | None:
    """Why a lab cannot be built on this machine, or None when it can."""
    if os.geteuid() != 0:
        return "network-namespace hosts need root"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"network-namespace hosts need {', '.join(missing)} (apt-get install nftables)"
    if not Path("/usr/bin/python3").exists():
        return "network-namespace hosts run their services with /usr/bin/python3"
    probe = f"{PREFIX}{os.getpid()}-probe"
    made = _sh(["ip", "netns", "add", probe], check=False)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.strip()}"
    _sh(["ip", "netns", "del", probe], check=False)
    return None


def _sh(
    argv: Sequence[str], *, input: bytes | None = None, check: bool = True, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        list(argv),
        input=input.decode() if input is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


@dataclass
class Host:
    """One machine: a network namespace, a mount namespace and the folder of its files."""

    name: str  # h1, h2, ... or client
    netns: str
    address: str
    root: Path  # holds upper/<dir> and work/<dir> for each overlaid dir
    mount_ns: Path

    @property
    def reach(self) -> str:
        """How deploy/cluster.sh reaches this host, as it would a real one."""
        return f"root@{self.address}"

    def enter(self, env: Mapping[str, str] | None = None) -> list[str]:
        """The argv prefix that runs a program inside this host, as root, in a clean
        environment (as an ssh login has) plus env."""
        extra = [f"{key}={value}" for key, value in (env or {}).items()]
        return [
            "nsenter", f"--net=/run/netns/{self.netns}", f"--mount={self.mount_ns}", "--",
            "env", "-i", f"PATH={SHIM_BIN}:{HOST_PATH}", "HOME=/root", "LANG=C.UTF-8", *extra,
        ]  # fmt: skip

    def run(
        self, command: str, *, input: bytes | None = None, check: bool = True,
        timeout: float = RUN_TIMEOUT_S,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run a shell command inside the host (the way ssh would) and wait for it."""
        return _sh([*self.enter(), "sh", "-c", f"cd /root; {command}"], input=input,
                   check=check, timeout=timeout)  # fmt: skip

    def spawn(
        self, argv: Sequence[str], env: Mapping[str, str] | None = None, **popen: object
    ) -> subprocess.Popen[bytes]:
        """Start a program inside the host in the background (the caller stops it)."""
        return subprocess.Popen([*self.enter(env), *argv], **popen)  # type: ignore[call-overload]

    def python(self, module: str, *args: str, **popen: object) -> subprocess.Popen[bytes]:
        """Run one of this repository's modules inside the host with the test venv."""
        env = {"PYTHONPATH": str(REPO)}
        return self.spawn([sys.executable, "-m", module, *args], env=env, **popen)

    def file(self, path: str) -> Path:
        """Where a file the host wrote under an overlaid dir (/etc/chat/...) lies here.

        For plain files only: a live SQLite database opened by this path bypasses the
        host's file locks (they belong to the overlay's file) and can crash its node;
        read those inside the host (tests/netns/schedules.py: replica_of).
        """
        inside = path.lstrip("/")
        for top in OVERLAID:
            if inside.startswith(top + "/"):
                return self.root / "upper" / top / inside[len(top) + 1 :]
        raise ValueError(f"{path} is not under an overlaid dir ({', '.join(OVERLAID)})")

    def nft(self, script: str) -> None:
        _sh([*self.enter(), "nft", "-f", "-"], input=script.encode())


@dataclass
class Lab:
    """Hosts h1..hN and one client host on a bridge, made and removed by ``with``."""

    folder: Path
    size: int
    delays: bool = False
    two_listeners: bool = False  # members serve chat users on CLIENT_PORT, peers on PORT
    hosts: list[Host] = field(default_factory=list)
    client: Host | None = None
    _switch: str = ""
    _made: list[str] = field(default_factory=list)  # namespaces, for removal
    _proxies: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __enter__(self) -> Lab:
        remove_leftovers()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- building -------------------------------------------------------------------------

    def _build(self) -> None:
        tag = f"{PREFIX}{os.getpid()}.{next(_LAB_NUMBERS)}"  # labs may overlap in one run
        self.folder.mkdir(parents=True, exist_ok=True)
        mounts = self.folder / "mnt"
        mounts.mkdir(exist_ok=True)
        _sh(["mount", "--bind", str(mounts), str(mounts)])
        _sh(["mount", "--make-private", str(mounts)])
        self._switch = f"{tag}-sw"
        self._add_netns(self._switch)
        _sh(["ip", "-n", self._switch, "link", "add", "br0", "type", "bridge"])
        _sh(["ip", "-n", self._switch, "link", "set", "br0", "up"])
        names = [f"h{i}" for i in range(1, self.size + 1)]
        for i, name in enumerate(names, start=1):
            self.hosts.append(self._add_host(tag, name, f"{SUBNET}.{10 + i}"))
        self.client = self._add_host(tag, "client", f"{SUBNET}.100")
        self._write_seam()
        if self.delays:
            for host in self.hosts:
                self._start_proxy(host)

    def _add_netns(self, name: str) -> None:
        _sh(["ip", "netns", "add", name])
        self._made.append(name)
        _sh(["ip", "-n", name, "link", "set", "lo", "up"])

    def _add_host(self, tag: str, name: str, address: str) -> Host:
        netns = f"{tag}-{name}"
        self._add_netns(netns)
        _sh(["ip", "-n", self._switch, "link", "add", name, "type", "veth",
             "peer", "name", "eth0", "netns", netns])  # fmt: skip
        _sh(["ip", "-n", self._switch, "link", "set", name, "master", "br0", "up"])
        _sh(["ip", "-n", netns, "addr", "add", f"{address}/24", "dev", "eth0"])
        _sh(["ip", "-n", netns, "link", "set", "eth0", "up"])
        root = self.folder / name
        mount_ns = self.folder / "mnt" / name
        mount_ns.touch()
        overlays = []
        for top in OVERLAID:
            for layer in ("upper", "work"):
                (root / layer / top).mkdir(parents=True, exist_ok=True)
            options = f"lowerdir=/{top},upperdir={root}/upper/{top},workdir={root}/work/{top}"
            overlays.append(f"mount -t overlay overlay -o {options} /{top}")
        _sh(["unshare", f"--mount={mount_ns}", "--propagation", "private",
             "sh", "-c", " && ".join(overlays)])  # fmt: skip
        host = Host(name, netns, address, root, mount_ns)
        host.nft(_CHAOS_TABLE)
        return host

    def _write_seam(self) -> None:
        """bin/ssh: ssh's command line, run inside the host that owns the address."""
        cases = "\n".join(
            f"  {h.address}) ns={h.netns}; mnt={h.mount_ns} ;;" for h in self.all_hosts()
        )
        script = textwrap.dedent(
            """\
            #!/bin/sh
            # ssh stand-in for the lab's hosts: ssh [OPTIONS] [USER@]ADDRESS COMMAND...
            while [ $# -gt 0 ]; do
              case "$1" in
                -[bcDEeFIiJLlmOopQRSWw]) shift 2 ;;
                -*) shift ;;
                *) break ;;
              esac
            done
            [ $# -ge 1 ] || {{ echo "ssh: no host" >&2; exit 255; }}
            target=${{1#*@}}
            case "$1" in *@*) user=${{1%%@*}} ;; *) user=root ;; esac
            shift
            case "$target" in
            {cases}
              *) echo "ssh: connect to host $target: No route to host" >&2; exit 255 ;;
            esac
            # Any other user logs in as that user of the host, in its home (from the host's
            # own /etc/passwd), as sshd would.
            as=
            [ "$user" = root ] || as="runuser -u $user --"
            # First back into the lab's own mount namespace: inside a host, the others'
            # namespace files are not usable (a bench in the client host runs this).
            exec nsenter --mount=/proc/{owner}/ns/mnt -- \\
              nsenter --net=/run/netns/$ns --mount=$mnt -- $as env -i PATH={path} \\
              LANG=C.UTF-8 sh -c 'HOME=$(getent passwd "$(id -un)" | cut -d: -f6); export HOME
                cd "$HOME" 2>/dev/null || cd /; exec sh -c "$0"' "$*"
            """
        ).format(cases=cases, path=f"{SHIM_BIN}:{HOST_PATH}", owner=os.getpid())
        seam = self.seam
        seam.parent.mkdir(exist_ok=True)
        seam.write_text(script)
        seam.chmod(0o755)

    # -- using ----------------------------------------------------------------------------

    @property
    def seam(self) -> Path:
        return self.folder / "bin" / "ssh"

    def all_hosts(self) -> list[Host]:
        return [*self.hosts, *([self.client] if self.client else [])]

    def host(self, node_id: int) -> Host:
        return self.hosts[node_id - 1]

    def hosts_file(self, ids: Iterable[int] | None = None, name: str = "hosts") -> Path:
        """A hosts file for deploy/cluster.sh: ``ID ADDRESS USER@HOST`` per line."""
        chosen = list(ids) if ids is not None else list(range(1, self.size + 1))
        lines = [f"{i} {self.member_address(i)} {self.host(i).reach}" for i in chosen]
        path = self.folder / name
        path.write_text("# id  address  reach\n" + "\n".join(lines) + "\n")
        return path

    def deploy_env(self) -> dict[str, str]:
        """The environment under which deploy/cluster.sh reaches these hosts."""
        return {**os.environ, "CHAT_SSH": str(self.seam)}

    def spec(self, ids: Iterable[int] | None = None) -> str:
        chosen = list(ids) if ids is not None else list(range(1, self.size + 1))
        return ",".join(f"{i}={self.member_address(i)}" for i in chosen)

    def member_address(self, node_id: int) -> str:
        """Node node_id's address in --cluster: HOST:PORT, or PEER/CLIENT with two listeners."""
        host = self.host(node_id).address
        return f"{host}:{PORT}/{host}:{CLIENT_PORT}" if self.two_listeners else f"{host}:{PORT}"

    # -- faults ---------------------------------------------------------------------------

    def drop(self, source: Host, target: Host) -> None:
        """Packets from source to target are lost (one way; add the reverse for a cut)."""
        target.nft(f"add rule inet chaos input ip saddr {source.address} drop\n")

    def cut(self, a: Host, b: Host) -> None:
        self.drop(a, b)
        self.drop(b, a)

    def partition(self, *sides: Sequence[Host]) -> None:
        """No traffic between hosts on different sides; hosts not named keep every link."""
        for i, side in enumerate(sides):
            for other in sides[i + 1 :]:
                for a in side:
                    for b in other:
                        self.cut(a, b)

    def heal(self) -> None:
        for host in self.all_hosts():
            host.nft("flush chain inet chaos input\n")

    def set_delay(self, one_way_ms: int) -> None:
        """Every link between nodes delays each byte by one_way_ms each way (RTT twice it)."""
        if not self.delays:
            raise RuntimeError("this lab was made without delay proxies (delays=True)")
        for host in self.hosts:
            control = self._control(host)
            _sh([*host.enter(), "/usr/bin/python3", "-c", _SET_DELAY, str(control),
                 str(one_way_ms)])  # fmt: skip

    def _control(self, host: Host) -> Path:
        return self.folder / f"{host.name}.delay.sock"

    def _start_proxy(self, host: Host) -> None:
        routes, redirects = [], []
        for j, peer in enumerate(self.hosts, start=1):
            if peer is host:
                continue
            local = 17000 + j
            routes += ["--route", f"127.0.0.1:{local}={peer.address}:{PORT}"]
            redirects.append(
                f"add rule ip chaosnat output meta mark != {PROXY_MARK} "
                f"ip daddr {peer.address} tcp dport {PORT} redirect to :{local}\n"
            )
        proxy = host.spawn(
            ["/usr/bin/python3", str(HERE / "delay_proxy.py"), *routes,
             "--control", str(self._control(host)), "--mark", str(PROXY_MARK)],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        self._proxies[host.name] = proxy
        assert proxy.stdout is not None
        line = proxy.stdout.readline()  # the proxy prints 'ready' once it listens
        if line.strip() != b"ready":
            raise RuntimeError(f"the delay proxy on {host.name} did not start: {line!r}")
        host.nft(_NAT_TABLE + "".join(redirects))

    # -- removal --------------------------------------------------------------------------

    def close(self) -> None:
        """Kill every process in the hosts, unmount, delete the namespaces. Idempotent."""
        for proxy in self._proxies.values():
            with contextlib.suppress(ProcessLookupError):
                proxy.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proxy.wait(timeout=5)
        self._proxies.clear()
        for netns in reversed(self._made):
            _kill_netns(netns)
        self._made.clear()
        mounts = self.folder / "mnt"
        for host in self.all_hosts():
            _sh(["umount", "--lazy", str(host.mount_ns)], check=False)
        _sh(["umount", "--lazy", str(mounts)], check=False)
        self.hosts.clear()
        self.client = None


def _kill_netns(netns: str) -> None:
    """SIGKILL everything in a namespace, wait until it is gone, delete the namespace."""
    deadline = time.monotonic() + 10
    while True:
        listed = _sh(["ip", "netns", "pids", netns], check=False).stdout.split()
        if not listed or time.monotonic() > deadline:
            break
        for pid in listed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.05)  # reaping is the parents' work; nothing announces it to us
    _sh(["ip", "netns", "del", netns], check=False)


def remove_leftovers() -> None:
    """Delete namespaces a killed test run made (their pid in the name is dead)."""
    listed = _sh(["ip", "netns", "list"], check=False).stdout.split("\n")
    for line in listed:
        name = line.split(" ", 1)[0]
        if not name.startswith(PREFIX) or "-" not in name:
            continue
        pid = name[len(PREFIX) : name.index("-")].partition(".")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            _kill_netns(name)


_CHAOS_TABLE = """\
table inet chaos {
  chain input { type filter hook input priority 0; policy accept; }
}
"""

_NAT_TABLE = """\
table ip chaosnat {
  chain output { type nat hook output priority -100; policy accept; }
}
"""

_SET_DELAY = """\
import socket, sys
with socket.socket(socket.AF_UNIX) as s:
    s.settimeout(5)
    s.connect(sys.argv[1])
    s.sendall(f"delay {sys.argv[2]}\\n".encode())
    reply = s.makefile().readline().strip()
    if reply != "ok":
        sys.exit(f"delay proxy: {reply}")
"""
