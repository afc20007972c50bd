"""Simulated hosts for multi-host tests: Linux network namespaces on a bridge.

Root only (``ip`` from iproute2 and ``nft`` from nftables must be installed)::

    with Hosts(4) as hosts:                       # h0 .. h3
        center, address = hosts.start_center(hosts[0], "--host", hosts[0].ip, "--port", "0")
        worker, _ = hosts.start_worker(hosts[1], address, "--ncores", "1")
        hosts[1].blackhole()                      # silent: no FIN, no RST
        hosts[1].heal()

Topology. A bridge ``dhb<pid>`` in the root namespace holds 10.213.7.1/24
(and fd42:d157:7::1/64 with ``ipv6=True``); host ``hI`` is the namespace
``dh<pid>-hI`` with ``lo`` up and one veth (``eth0`` inside, ``dh<pid>vI`` on
the bridge) holding 10.213.7.(10+I) (and fd42:d157:7::(10+I)), and a default
route via the root's bridge address, so a process in the root namespace (a
test's client) reaches every host and every host reaches the root. Nothing
else: the root namespace gets no forwarding, NAT or nftables rule, and every
namespace has an nftables guard dropping anything it sends outside the /24
(the /64, link-local and link multicast with IPv6) and loopback, so no packet
leaves the bridge even on a machine that forwards.

Faults, per host, in one nftables table ``inet dharness`` in its namespace
(rebuilt atomically from the host's state at each change):

* `Host.blackhole` drops every packet in and out except on loopback: peers'
  connects time out and established connections go silent (no FIN, no RST);
  `Host.heal` lifts it, and the partitions of that host too.
* `Host.partition` drops traffic between two hosts, both ways, in both.
* `Hosts.add_latency` redirects (nat output chain) every TCP connection the
  host opens to another address of the /24 to ``relay.py`` running in that
  namespace, which forwards each chunk after ``ms / 2`` each way: a round
  trip gets ``ms`` longer. Connections established before the call keep their
  direct path. A connect through the relay succeeds at once even when the
  destination is blackholed (see relay.py); the connection then stays silent.

Cleanup: every process started in a host (killed with SIGKILL to its process
group, and whatever else still runs in the namespace), every namespace (with
its veth and nftables table), and the bridge go away in `Hosts.close`, which
``__exit__``, an ``atexit`` hook and a SIGTERM/SIGINT handler (which then
re-raises the signal) call. Leftovers of earlier runs whose pid is dead are
removed at start. One `Hosts` at a time per machine owns the /24: starting
one waits (up to ``LOCK_TIMEOUT`` s) for a file lock held by the current owner.

Bounds (seconds): ``COMMAND_TIMEOUT`` per ``ip``/``nft`` command,
``LINE_TIMEOUT`` for a started process's startup line, ``KILL_TIMEOUT`` for a
killed process to be reaped, ``LOCK_TIMEOUT`` for the lock.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

try:
    import pytest
except ImportError:  # the benchmark uses the harness without pytest
    pytest = None

__all__ = [
    "SUBNET4",
    "SUBNET6",
    "HarnessError",
    "Host",
    "HostProcess",
    "Hosts",
    "hosts_unavailable",
    "leftovers",
    "needs_hosts",
    "start_center",
    "start_worker",
    "sweep_leftovers",
]

SUBNET4 = ipaddress.ip_network("10.213.7.0/24")
SUBNET6 = ipaddress.ip_network("fd42:d157:7::/64")
ROOT_IP = "10.213.7.1"
ROOT_IP6 = "fd42:d157:7::1"
FIRST_HOST = 10  # h0 is .10 / ::10
MAX_HOSTS = 100
TABLE = "dharness"  # nftables table (family inet) in each host's namespace
PREFIX = "dh"  # namespaces dh<pid>-hI, veths dh<pid>vI, bridge dhb<pid>
RELAY = Path(__file__).resolve().with_name("relay.py")
RELAY_PORT = 15380  # the delay relay listens on 127.0.0.1 / ::1 in the host
RELAY_MARK = 0x2137  # SO_MARK of the relay's own connections (never redirected)
LOCK_FILE = Path("/run/lock/distributed-test-hosts.lock")

COMMAND_TIMEOUT = 20.0
LINE_TIMEOUT = float(os.environ.get("DISTRIBUTED_HOSTS_LINE_TIMEOUT", 30))
KILL_TIMEOUT = 10.0
LOCK_TIMEOUT = float(os.environ.get("DISTRIBUTED_HOSTS_LOCK_TIMEOUT", 600))

_NETNS_RE = re.compile(rf"^{PREFIX}(\d+)-h\d+$")
_LINK_RE = re.compile(rf"^{PREFIX}(?:b(\d+)|(\d+)v\d+)$")


class HarnessError(RuntimeError):
    """Simulated hosts could not be set up or a process in one misbehaved."""


def hosts_unavailable() -> str | None:
    """Why network namespaces cannot be created here, or None if they can."""
    if not sys.platform.startswith("linux"):
        return f"simulated hosts need Linux network namespaces (this is {sys.platform})"
    if os.geteuid() != 0:
        return "simulated hosts need root (network namespaces, nftables)"
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    if missing:
        return f"simulated hosts need {' and '.join(missing)} (apt-get install iproute2 nftables)"
    return None


if pytest is not None:
    needs_hosts = pytest.mark.skipif(
        hosts_unavailable() is not None, reason=str(hosts_unavailable())
    )
else:  # pragma: no cover
    needs_hosts = None


def _cmd(*argv: str, input: str | None = None, check: bool = True) -> str:
    """Run an ip/nft command (bounded by COMMAND_TIMEOUT); its stdout."""
    try:
        done = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise HarnessError(f"{' '.join(argv)}: no exit within {COMMAND_TIMEOUT:g}s") from None
    if check and done.returncode != 0:
        raise HarnessError(
            f"{' '.join(argv)} failed (exit {done.returncode}): {done.stderr.strip()}"
            + (f"\ninput:\n{input}" if input else "")
        )
    return done.stdout


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return any(h._pid == pid for h in _LIVE)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _netns_names() -> list[str]:
    return [line.split()[0] for line in _cmd("ip", "netns", "list").splitlines() if line.strip()]


def _link_names() -> list[str]:
    return [link["ifname"] for link in json.loads(_cmd("ip", "-j", "link", "show") or "[]")]


def leftovers(pid: int | None = None) -> list[str]:
    """Our namespaces and links in the root namespace (of run `pid`, or of any run)."""
    found = []
    for name in _netns_names():
        m = _NETNS_RE.match(name)
        if m and (pid is None or int(m.group(1)) == pid):
            found.append(f"netns {name}")
    for name in _link_names():
        m = _LINK_RE.match(name)
        if m and (pid is None or int(m.group(1) or m.group(2)) == pid):
            found.append(f"link {name}")
    return found


def _kill_netns_processes(netns: str) -> None:
    """SIGKILL everything still running in `netns` and wait (KILL_TIMEOUT) until gone."""
    deadline = time.monotonic() + KILL_TIMEOUT
    while True:
        out = _cmd("ip", "netns", "pids", netns, check=False)
        pids = [int(p) for p in out.split()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise HarnessError(f"processes {pids} in {netns} survive SIGKILL")
        time.sleep(0.05)


def sweep_leftovers() -> list[str]:
    """Remove namespaces and links of earlier runs whose process is gone; what was removed."""
    removed = []
    for name in _netns_names():
        m = _NETNS_RE.match(name)
        if m and not _pid_alive(int(m.group(1))):
            _kill_netns_processes(name)
            _cmd("ip", "netns", "del", name, check=False)
            removed.append(f"netns {name}")
    for name in _link_names():
        m = _LINK_RE.match(name)
        if m and not _pid_alive(int(m.group(1) or m.group(2))):
            _cmd("ip", "link", "del", name, check=False)
            removed.append(f"link {name}")
    return removed


def _prefix_in_use() -> list[str]:
    """Routes and addresses in the root namespace that overlap our /24 or /64."""
    problems = []
    for family, subnet in (("-4", SUBNET4), ("-6", SUBNET6)):
        for route in json.loads(_cmd("ip", "-j", family, "route", "show", "table", "all") or "[]"):
            dst = route.get("dst", "default")
            if dst == "default":
                continue
            with contextlib.suppress(ValueError):
                if ipaddress.ip_network(dst, strict=False).overlaps(subnet):
                    problems.append(f"route {dst} dev {route.get('dev', '?')}")
        for link in json.loads(_cmd("ip", "-j", family, "addr", "show") or "[]"):
            for info in link.get("addr_info", []):
                if ipaddress.ip_address(info["local"]) in subnet:
                    problems.append(f"address {info['local']} on {link['ifname']}")
    return problems


# --------------------------------------------------------------------------- processes


class HostProcess(subprocess.Popen):
    """A process started in a host (via ``ip netns exec``), in its own process group.

    With ``watch=True`` its stdout is read line by line by a thread (see
    `wait_line`, `lines`) and its stderr kept in a temporary file; `describe`
    shows both, for failure messages.
    """

    def __init__(self, host: Host, argv, *, name: str | None = None, watch: bool = False, **kw):
        self.host = host
        self.argv = [str(a) for a in argv]
        self.name = name or Path(self.argv[0]).name
        self.lines: list[str] = []
        self._eof = False
        self._cond = threading.Condition()
        self._stderr_file = None
        kw.setdefault("stdin", subprocess.DEVNULL)
        env = dict(kw.pop("env", None) or os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        if watch:
            self._stderr_file = tempfile.TemporaryFile()
            kw["stdout"] = subprocess.PIPE
            kw["stderr"] = self._stderr_file
        super().__init__(
            ["ip", "netns", "exec", host.netns, *self.argv],
            start_new_session=True,  # its own process group, killed as a whole
            env=env,
            **kw,
        )
        self._reader = None
        if watch:
            self._reader = threading.Thread(
                target=self._read, name=f"stdout-{self.name}-{self.pid}", daemon=True
            )
            self._reader.start()

    def _read(self) -> None:
        for raw in self.stdout:
            with self._cond:
                self.lines.append(raw.decode(errors="replace").rstrip("\r\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_line(self, prefix: str, timeout: float = LINE_TIMEOUT) -> str:
        """The rest of the first stdout line starting with `prefix` (watch=True only).

        Raises `HarnessError` showing the process's output if no such line
        comes within `timeout` seconds or the process closes its stdout.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if line.startswith(prefix):
                        return line[len(prefix) :].strip()
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    break
                self._cond.wait(left)
        if self._eof:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.wait(2)
        what = "it closed its stdout" if self._eof else f"not within {timeout:g}s"
        raise HarnessError(f"{self.name}: no line {prefix!r} ({what})\n{self.describe()}")

    def describe(self) -> str:
        """Command, exit code, stdout and stderr so far."""
        stderr = "(not kept)"
        if self._stderr_file is not None and not self._stderr_file.closed:
            self._stderr_file.seek(0)
            stderr = self._stderr_file.read().decode(errors="replace").rstrip() or "(nothing)"
            self._stderr_file.seek(0, os.SEEK_END)
        with self._cond:
            stdout = "\n".join(self.lines) or "(nothing)"
        return (
            f"{self.name} on {self.host.name} (pid {self.pid}, exit code {self.poll()}):\n"
            f"  command: {' '.join(self.argv)}\n"
            f"  --- stdout ---\n{stdout}\n  --- stderr ---\n{stderr}"
        )

    def kill_group(self) -> None:
        """SIGKILL its process group, reap it (KILL_TIMEOUT) and close its pipes."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.wait(KILL_TIMEOUT)
        if self._reader is not None:
            self._reader.join(KILL_TIMEOUT)
        for f in (self.stdin, self.stdout, self.stderr, self._stderr_file):
            if f is not None:
                with contextlib.suppress(Exception):
                    f.close()


# --------------------------------------------------------------------------- hosts


class Host:
    """One simulated host: a network namespace with one address on the bridge.

    Attributes: ``name`` (``h0``...), ``netns`` (namespace name), ``ip``,
    ``ip6`` (None unless the `Hosts` has ``ipv6=True``), ``index``.
    """

    def __init__(self, hosts: Hosts, index: int):
        self.hosts = hosts
        self.index = index
        self.name = f"h{index}"
        self.netns = f"{hosts.prefix}-h{index}"
        self.veth = f"{hosts.prefix}v{index}"
        self.ip = str(SUBNET4[FIRST_HOST + index])
        self.ip6 = str(ipaddress.ip_address(f"fd42:d157:7::{FIRST_HOST + index}")) if (
            hosts.ipv6
        ) else None  # fmt: skip
        self.blackholed = False
        self.partitioned: set[Host] = set()
        self.latency_ms: float | None = None
        self.relay: HostProcess | None = None

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.ip}{' ' + self.ip6 if self.ip6 else ''}>"

    def popen(self, argv, **kw) -> HostProcess:
        """Start `argv` inside this host (``ip netns exec``); killed at cleanup.

        Keyword arguments go to `subprocess.Popen`, plus ``watch=True`` (read
        stdout lines, see `HostProcess`) and ``name``.
        """
        return self.hosts._track(HostProcess(self, argv, **kw))

    def run(self, argv, timeout: float, **kw) -> subprocess.CompletedProcess:
        """Run `argv` inside this host and wait up to `timeout` s; text output captured.

        On timeout its process group is killed and `subprocess.TimeoutExpired`
        raised.
        """
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("text", True)
        proc = self.popen(argv, **kw)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill_group()
            raise
        finally:
            self.hosts._untrack(proc)
        return subprocess.CompletedProcess(proc.argv, proc.returncode, out, err)

    def blackhole(self) -> None:
        """Drop every packet in and out of this host but loopback (silent: no FIN/RST)."""
        self.blackholed = True
        self.hosts._apply(self)

    def heal(self) -> None:
        """Undo `blackhole` and every `partition` involving this host."""
        self.blackholed = False
        others = list(self.partitioned)
        for other in others:
            other.partitioned.discard(self)
        self.partitioned.clear()
        for host in [self, *others]:
            self.hosts._apply(host)

    def partition(self, other: Host) -> None:
        """Drop all traffic between this host and `other`, both ways (rules in both)."""
        if other is self:
            raise ValueError("a host cannot be partitioned from itself")
        self.partitioned.add(other)
        other.partitioned.add(self)
        self.hosts._apply(self)
        self.hosts._apply(other)

    def ruleset(self) -> str:
        """This host's nftables table, as `nft -f` input (see the module docstring)."""
        # 127.0.0.1 / ::1: where the latency redirect sends packets (oif is still eth0 here)
        allowed4 = f"{SUBNET4}, 127.0.0.0/8"
        allowed6 = f"{SUBNET6}, ::1, fe80::/10, ff02::/16"
        lines = [
            f"table inet {TABLE}",
            f"delete table inet {TABLE}",
            f"table inet {TABLE} {{",
            "  chain guard_out {",
            "    type filter hook output priority 10; policy accept;",
            '    oifname "lo" accept',
            f"    ip daddr {{ {allowed4} }} accept",
            f"    ip6 daddr {{ {allowed6} }} accept",
            "    counter drop",
            "  }",
        ]
        for chain, hook, lo, addr in (
            ("block_in", "input", "iifname", "saddr"),
            ("block_out", "output", "oifname", "daddr"),
        ):
            lines += [f"  chain {chain} {{", f"    type filter hook {hook} priority 0;"]
            if self.blackholed:
                lines += [f'    {lo} "lo" accept', "    drop"]
            for other in sorted(self.partitioned, key=lambda h: h.index):
                lines.append(f"    ip {addr} {other.ip} drop")
                if other.ip6:
                    lines.append(f"    ip6 {addr} {other.ip6} drop")
            lines.append("  }")
        if self.latency_ms is not None:
            redirect = f"meta l4proto tcp redirect to :{RELAY_PORT}"
            lines += [
                "  chain latency_out {",
                "    type nat hook output priority -100;",
                f"    meta mark {RELAY_MARK:#x} return",
                f"    ip daddr {SUBNET4} ip daddr != {self.ip} {redirect}",
            ]
            if self.ip6:
                lines.append(f"    ip6 daddr {SUBNET6} ip6 daddr != {self.ip6} {redirect}")
            lines.append("  }")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def nft(self, *args: str, input: str | None = None) -> str:
        """Run ``nft args`` in this host's namespace; its stdout."""
        return _cmd("ip", "netns", "exec", self.netns, "nft", *args, input=input)

    def ip_cmd(self, *args: str) -> str:
        """Run ``ip -n <netns> args``; its stdout."""
        return _cmd("ip", "-n", self.netns, *args)


_LIVE: set[Hosts] = set()
_handlers_installed: dict[int, object] = {}
_atexit_registered = False


def _cleanup_all() -> None:
    for hosts in list(_LIVE):
        with contextlib.suppress(Exception):
            hosts.close()


def _on_signal(signum, frame) -> None:
    _cleanup_all()
    previous = _handlers_installed.pop(signum, signal.SIG_DFL)
    signal.signal(signum, previous)
    if callable(previous):
        previous(signum, frame)  # e.g. Python's SIGINT handler: KeyboardInterrupt
    elif previous == signal.SIG_DFL:
        os.kill(os.getpid(), signum)


def _install_cleanup_hooks() -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(_cleanup_all)
        _atexit_registered = True
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        current = signal.getsignal(signum)
        if current is not _on_signal and current != signal.SIG_IGN:
            _handlers_installed[signum] = current
            signal.signal(signum, _on_signal)


class Hosts:
    """`n` simulated hosts ``h0``... on one bridge (see the module docstring).

    A context manager (`start` / `close`); index it (``hosts[1]``) or iterate.
    ``root_ip`` / ``root_ip6`` are the root namespace's addresses on the bridge.
    """

    root_ip = ROOT_IP

    def __init__(self, n: int, ipv6: bool = False):
        if not 1 <= n <= MAX_HOSTS:
            raise ValueError(f"n must be between 1 and {MAX_HOSTS}, got {n}")
        self.n = n
        self.ipv6 = ipv6
        self.root_ip6 = ROOT_IP6 if ipv6 else None
        self._pid = os.getpid()
        self.prefix = f"{PREFIX}{self._pid}"
        self.bridge = f"{PREFIX}b{self._pid}"
        self.hosts = [Host(self, i) for i in range(n)]
        self._procs: list[HostProcess] = []
        self._procs_lock = threading.Lock()
        self._lock_fd: int | None = None
        self._started = False
        self._closed = False

    def __repr__(self) -> str:
        return f"<Hosts {self.bridge} n={self.n}{' ipv6' if self.ipv6 else ''}>"

    def __getitem__(self, i: int) -> Host:
        return self.hosts[i]

    def __iter__(self):
        return iter(self.hosts)

    def __len__(self) -> int:
        return self.n

    def __enter__(self) -> Hosts:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- setup ----------------------------------------------------------------

    def _acquire_lock(self) -> None:
        LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    holder = LOCK_FILE.read_text().strip() or "?"
                    raise HarnessError(
                        f"another run (pid {holder}) has held {LOCK_FILE} for "
                        f"{LOCK_TIMEOUT:g}s; simulated hosts share {SUBNET4}, one run at "
                        "a time (set DISTRIBUTED_HOSTS_LOCK_TIMEOUT to wait longer)"
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.write(fd, str(self._pid).encode())
        self._lock_fd = fd

    def start(self) -> Hosts:
        """Create the bridge, namespaces, veths, addresses, routes and guard rules."""
        if self._started:
            raise RuntimeError(f"{self!r} was already started")
        reason = hosts_unavailable()
        if reason:
            raise HarnessError(reason)
        if any(h is not self and h._pid == self._pid for h in _LIVE):
            raise HarnessError("another Hosts is active in this process; close it first")
        self._started = True
        self._acquire_lock()
        try:
            sweep_leftovers()
            in_use = _prefix_in_use()
            if in_use:
                raise HarnessError(
                    f"{SUBNET4} / {SUBNET6} (owned by the simulated-hosts harness) is already "
                    f"in use on this machine: {'; '.join(in_use)}. Remove it, or stop the run "
                    "that created it."
                )
            _LIVE.add(self)
            _install_cleanup_hooks()
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def _create(self) -> None:
        br = self.bridge
        _cmd("ip", "link", "add", br, "type", "bridge")
        self._sysctl_root(br, disable_ipv6=not self.ipv6)
        _cmd("ip", "addr", "add", f"{ROOT_IP}/24", "dev", br)
        if self.ipv6:
            _cmd("ip", "addr", "add", f"{ROOT_IP6}/64", "dev", br, "nodad")
        _cmd("ip", "link", "set", br, "up")
        for host in self.hosts:
            _cmd("ip", "netns", "add", host.netns)
            # Set before the veth moves in: it inherits the namespace's defaults.
            v6 = "0" if self.ipv6 else "1"
            settings = {
                "net/ipv6/conf/all/disable_ipv6": v6,
                "net/ipv6/conf/default/disable_ipv6": v6,
                "net/ipv6/conf/default/accept_ra": "0",
                "net/ipv6/conf/default/router_solicitations": "0",
            }
            script = "; ".join(f"echo {v} > /proc/sys/{k}" for k, v in settings.items())
            _cmd("ip", "netns", "exec", host.netns, "sh", "-ec", script)
            _cmd(
                "ip", "link", "add", host.veth, "type", "veth",
                "peer", "name", "eth0", "netns", host.netns,
            )  # fmt: skip
            self._sysctl_root(host.veth, disable_ipv6=True)  # a bridge port needs no address
            _cmd("ip", "link", "set", host.veth, "master", br, "up")
            batch = [
                "link set lo up",
                f"addr add {host.ip}/24 dev eth0",
                "link set eth0 up",
                f"route add default via {ROOT_IP}",
            ]
            if self.ipv6:
                batch += [
                    f"addr add {host.ip6}/64 dev eth0 nodad",
                    f"route add default via {ROOT_IP6}",  # the gateway says -6
                ]
            _cmd("ip", "-n", host.netns, "-batch", "-", input="\n".join(batch) + "\n")
            self._apply(host)

    @staticmethod
    def _sysctl_root(ifname: str, disable_ipv6: bool) -> None:
        path = Path("/proc/sys/net/ipv6/conf") / ifname / "disable_ipv6"
        if path.exists():
            path.write_text("1\n" if disable_ipv6 else "0\n")

    def _apply(self, host: Host) -> None:
        host.nft("-f", "-", input=host.ruleset())

    # -- processes ------------------------------------------------------------

    def _track(self, proc: HostProcess) -> HostProcess:
        with self._procs_lock:
            self._procs.append(proc)
        return proc

    def _untrack(self, proc: HostProcess) -> None:
        with self._procs_lock:
            with contextlib.suppress(ValueError):
                self._procs.remove(proc)

    def add_latency(self, host: Host, ms: float) -> None:
        """Add `ms` to the round trip of every TCP connection `host` opens from now on
        to another address of the /24 (through the delay relay, see relay.py)."""
        if ms <= 0:
            raise ValueError(f"ms must be positive, got {ms}")
        self.remove_latency(host)
        relay = host.popen(
            [sys.executable, str(RELAY), "--port", str(RELAY_PORT),
             "--delay-ms", str(ms), "--mark", hex(RELAY_MARK)],
            watch=True, name=f"relay@{host.name}",
        )  # fmt: skip
        relay.wait_line("relay listening on ")
        host.relay = relay
        host.latency_ms = ms
        self._apply(host)

    def remove_latency(self, host: Host) -> None:
        """New connections from `host` go direct again; the relay (and what it carries) stops."""
        if host.relay is None:
            return
        host.latency_ms = None
        self._apply(host)
        host.relay.kill_group()
        self._untrack(host.relay)
        host.relay = None

    def start_center(self, host: Host, *args, timeout: float = LINE_TIMEOUT):
        """See the module-level `start_center`."""
        return start_center(host, *args, timeout=timeout)

    def start_worker(self, host: Host, center_address: str, *args, **kwargs):
        """See the module-level `start_worker`."""
        return start_worker(host, center_address, *args, **kwargs)

    # -- cleanup --------------------------------------------------------------

    def close(self) -> None:
        """Kill every process, delete every namespace, veth and the bridge. Idempotent."""
        if self._closed:
            return
        self._closed = True
        errors = []
        with self._procs_lock:
            procs, self._procs = self._procs, []
        for proc in procs:
            try:
                proc.kill_group()
            except Exception as e:  # keep cleaning up
                errors.append(f"killing {proc.name}: {e}")
        if self._started:
            for host in self.hosts:
                host.relay = None
                try:
                    if host.netns in _netns_names():
                        _kill_netns_processes(host.netns)
                        _cmd("ip", "netns", "del", host.netns)
                except HarnessError as e:
                    errors.append(str(e))
            # A deleted namespace takes its veth pair along (asynchronously).
            links = set(_link_names())
            for name in [h.veth for h in self.hosts] + [self.bridge]:
                if name in links:
                    _cmd("ip", "link", "del", name, check=False)
            deadline = time.monotonic() + KILL_TIMEOUT
            while (left := leftovers(self._pid)) and time.monotonic() < deadline:
                time.sleep(0.05)
            if left:
                errors.append(f"still there after {KILL_TIMEOUT:g}s: {', '.join(left)}")
        _LIVE.discard(self)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
        if errors:
            raise HarnessError(f"cleanup of {self!r} incomplete: " + "; ".join(errors))


# --------------------------------------------------------------------------- cluster


def start_center(host: Host, *args, timeout: float = LINE_TIMEOUT):
    """Run ``python -m distributed_center *args`` in `host`; (process, printed address).

    Waits up to `timeout` s for ``Start center at ADDRESS``; raises
    `HarnessError` with the process's output otherwise. Pass ``--host`` /
    ``--port`` etc. in `args` (the CLI's defaults apply otherwise).
    """
    proc = host.popen(
        [sys.executable, "-m", "distributed_center", *map(str, args)],
        watch=True,
        name=f"center@{host.name}",
    )
    return proc, proc.wait_line("Start center at ", timeout)


def start_worker(
    host: Host,
    center_address: str,
    *args,
    timeout: float = LINE_TIMEOUT,
    wait_registered: bool = True,
):
    """Run ``python -m distributed_worker CENTER *args`` in `host`; (process, address).

    Waits up to `timeout` s for ``Start worker at ADDRESS`` and then (unless
    ``wait_registered=False``) for ``Registered with center at ...``; raises
    `HarnessError` with the process's output otherwise.
    """
    proc = host.popen(
        [sys.executable, "-m", "distributed_worker", center_address, *map(str, args)],
        watch=True,
        name=f"worker@{host.name}",
    )
    address = proc.wait_line("Start worker at ", timeout)
    if wait_registered:
        proc.wait_line("Registered with center at ", timeout)
    return proc, address
