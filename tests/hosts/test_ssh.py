"""SSHCluster against real OpenSSH servers, one per simulated host (issue 12).

Each host runs Debian's ``sshd`` on its namespace address, port 22, with a
host key, an ``authorized_keys`` and a config made by the test in a
temporary directory (key login as the current user, SFTP subsystem). The
hosts share this machine's file system, so the remote Python is this
``sys.executable``. Nothing of the user's own ``~/.ssh`` is read or written:
asyncssh gets the key and a known_hosts file explicitly.

Skipped, with the reason, without network namespaces (see harness.py), without
an OpenSSH server (``apt-get install openssh-server``; ``.ci/run`` installs it)
or without asyncssh; on CI (``CI`` set) a missing sshd or asyncssh fails.
"""

from __future__ import annotations

import getpass
import operator
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness import needs_hosts

pytestmark = needs_hosts

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
START_TIMEOUT = 20.0  # seconds for an sshd to accept connections
GONE_TIMEOUT = 15.0  # seconds for the nodes' processes to be gone after close()


def _require(what: str, ok: bool) -> None:
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"the SSH launcher test needs {what} on CI")
        pytest.skip(f"needs {what}")


@pytest.fixture
def asyncssh():
    try:
        import asyncssh
    except ImportError:
        asyncssh = None
    _require("asyncssh (pip install 'distributed-client[ssh]')", asyncssh is not None)
    return asyncssh


class SSHHosts:
    """Simulated hosts, each running sshd; `keyfile` and `known_hosts` for the clients."""

    def __init__(self, hosts, tmp: Path, asyncssh):
        self.hosts = hosts
        self.tmp = tmp
        self.user = getpass.getuser()
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.keyfile = tmp / "id_ed25519"
        client_key.write_private_key(str(self.keyfile))
        os.chmod(self.keyfile, 0o600)
        (tmp / "authorized_keys").write_bytes(client_key.export_public_key())
        host_keyfile = tmp / "host_key"
        host_key.write_private_key(str(host_keyfile))
        os.chmod(host_keyfile, 0o600)
        public = host_key.export_public_key().decode().strip()
        self.known_hosts = tmp / "known_hosts"
        self.known_hosts.write_text("".join(f"{h.ip} {public}\n" for h in hosts))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        self.sshd = {}
        for h in hosts:
            config = tmp / f"sshd_config_{h.name}"
            config.write_text(
                f"ListenAddress {h.ip}:22\n"
                f"HostKey {host_keyfile}\n"
                f"AuthorizedKeysFile {tmp / 'authorized_keys'}\n"
                "PermitRootLogin prohibit-password\n"
                "PasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\n"
                "UsePAM no\n"
                "StrictModes no\n"
                "PidFile none\n"
                "Subsystem sftp internal-sftp\n"
                "LogLevel ERROR\n"
            )
            log = open(tmp / f"sshd_{h.name}.log", "wb")  # noqa: SIM115 - kept for the test
            self.sshd[h.name] = h.popen(
                [SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log
            )
            log.close()
        for h in hosts:
            self._wait_listening(h)

    def _wait_listening(self, host) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with socket.create_connection((host.ip, 22), timeout=2):
                    return
            except OSError:
                if time.monotonic() > deadline or self.sshd[host.name].poll() is not None:
                    log = (self.tmp / f"sshd_{host.name}.log").read_text(errors="replace")
                    raise AssertionError(f"sshd on {host.name} is not listening:\n{log}") from None
                time.sleep(0.1)

    def pids(self, host) -> set[int]:
        """Processes in the host's namespace other than its listening sshd."""
        out = subprocess.run(
            ["ip", "netns", "pids", host.netns], capture_output=True, text=True, timeout=20
        )
        pids = {int(p) for p in out.stdout.split()}
        return pids - {self.sshd[host.name].pid, os.getpid()}

    def cluster_kwargs(self) -> dict:
        return {
            "username": self.user,
            "client_keys": [str(self.keyfile)],
            "known_hosts": str(self.known_hosts),
            "python": sys.executable,
            "connect_timeout": 5.0,
        }


@pytest.fixture
def ssh_hosts(hosts, tmp_path, asyncssh):
    _require(f"an OpenSSH server at {SSHD} (apt-get install openssh-server)", os.path.exists(SSHD))
    return SSHHosts(hosts(3), tmp_path, asyncssh)


def _wait_gone(ssh_hosts) -> dict:
    deadline = time.monotonic() + GONE_TIMEOUT
    while True:
        left = {h.name: ssh_hosts.pids(h) for h in ssh_hosts.hosts}
        if not any(left.values()) or time.monotonic() > deadline:
            return {k: v for k, v in left.items() if v}
        time.sleep(0.1)


def test_three_hosts_start_run_a_map_and_stop(ssh_hosts):
    from distributed_client import Executor, SSHCluster

    lines: list[str] = []
    names = [h.ip for h in ssh_hosts.hosts]
    with SSHCluster(names, log=lines.append, **ssh_hosts.cluster_kwargs()) as cluster:
        assert cluster.center_address.startswith(f"tcp://{names[0]}:")
        assert sorted(
            a.split("//")[1].rsplit(":", 1)[0] for a in cluster.worker_addresses
        ) == sorted(names[1:])
        # this process's default secret file is the one the cluster uses
        with Executor(cluster.center_address) as e:
            assert [f.result() for f in e.map(operator.neg, range(50))] == [-i for i in range(50)]
            held = e.submit(operator.add, 1, 2)
            assert held.result() == 3
    # logs streamed with the host name
    assert any(ln.startswith(f"[{names[0]} center] Start center at ") for ln in lines), lines
    for ip in names[1:]:
        assert any(ln.startswith(f"[{ip} worker] Registered with center at ") for ln in lines)
    assert not any("secret" in ln and len(ln) > 64 and "ssh-" not in ln for ln in lines)
    assert _wait_gone(ssh_hosts) == {}, "processes left running after close()"
    assert not (Path.home() / cluster._remote_secret).exists(), "the copied secret was left"


def test_the_secret_never_appears_on_a_command_line(ssh_hosts):
    from distributed_client import SSHCluster
    from distributed_core import default_secret_file

    names = [h.ip for h in ssh_hosts.hosts[:2]]
    with SSHCluster(names, log=lambda line: None, **ssh_hosts.cluster_kwargs()):
        secret = default_secret_file().read_text().strip()
        for h in ssh_hosts.hosts[:2]:
            for pid in ssh_hosts.pids(h):
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                except OSError:
                    continue
                assert secret.encode() not in cmdline
    assert _wait_gone(ssh_hosts) == {}


def test_an_unreachable_host_is_one_line(ssh_hosts):
    from distributed_client import SSHCluster, SSHClusterError

    dead = ssh_hosts.hosts[2]
    dead.blackhole()  # no answer at all: bounded by connect_timeout
    names = [h.ip for h in ssh_hosts.hosts]
    kwargs = {**ssh_hosts.cluster_kwargs(), "connect_timeout": 2.0}
    start = time.monotonic()
    with pytest.raises(SSHClusterError) as info:
        SSHCluster(names, log=lambda line: None, **kwargs)
    assert time.monotonic() - start < 30  # bounded (not a timing assert: 15x the bound)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith("cannot reach 1 of 3 hosts over SSH")
    assert f"{dead.ip}: no answer (timed out)" in text
    # nothing was started on the reachable ones
    assert _wait_gone(ssh_hosts) == {}


def test_the_printed_join_command_works_verbatim(ssh_hosts, tmp_path):
    """dcenter on h0 prints a line; run on h1 as is, it copies the secret and joins.

    scp reads ~/.ssh from the password database's home, which a test must not
    touch: an ``scp`` first on PATH adds only the test's key and known_hosts
    to the real /usr/bin/scp, which copies over the real sshd on h0.
    """
    h0, h1 = ssh_hosts.hosts[:2]
    home0, home1, bin_dir = tmp_path / "home0", tmp_path / "home1", tmp_path / "bin"
    for d in (home0, home1, bin_dir):
        d.mkdir()
    real_scp = shutil.which("scp")
    _require("scp (openssh-client)", real_scp is not None)
    wrapper = bin_dir / "scp"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"exec {real_scp} -o BatchMode=yes -o UserKnownHostsFile={ssh_hosts.known_hosts} "
        f'-i {ssh_hosts.keyfile} "$@"\n'
    )
    wrapper.chmod(0o755)
    python_bin = str(Path(sys.executable).parent)
    env0 = dict(os.environ, HOME=str(home0), DISTRIBUTED_SECRET_FILE="")
    center = h0.popen(
        [sys.executable, "-m", "distributed_center", "--port", "0"], env=env0, watch=True
    )
    address = center.wait_line("Start center at ")
    join = center.wait_line("  install -d -m 700 ")
    line = "install -d -m 700 " + join
    assert line.endswith(f"dworker {address}"), line
    env1 = dict(
        os.environ,
        HOME=str(home1),
        DISTRIBUTED_SECRET_FILE="",
        PATH=os.pathsep.join([str(bin_dir), python_bin, os.environ["PATH"]]),
    )
    worker = h1.popen(["bash", "-c", line], env=env1, watch=True)
    worker.wait_line("Registered with center at ")
    copied = home1 / ".config" / "distributed" / "secret"
    assert copied.read_text() == (home0 / ".config" / "distributed" / "secret").read_text()
    assert oct(copied.stat().st_mode & 0o777) == "0o600"
