"""SSHCluster and ``dcluster ssh`` without an SSH server: the errors (tests/hosts runs real sshd)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from distributed_client import SSHCluster, SSHClusterError
from distributed_core.testing import free_port

pytest.importorskip("asyncssh")

MAIN = "import sys; from distributed_client.ssh import main; sys.exit(main(sys.argv[1:]))"


def test_needs_two_hosts():
    with pytest.raises(ValueError, match="at least 2 hosts"):
        SSHCluster(["127.0.0.1"])


def test_refused_host_is_one_line_and_nothing_is_left():
    port = free_port("127.0.0.1")  # nothing listens there
    with pytest.raises(SSHClusterError) as info:
        SSHCluster(["127.0.0.1", "127.0.0.1"], port=port, known_hosts=None, connect_timeout=5)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(
        f"cannot reach 1 of 1 hosts over SSH (port {port}, within 5s): 127.0.0.1:"
    )


def test_dcluster_ssh_unreachable_is_one_line():
    port = free_port("127.0.0.1")
    out = subprocess.run(
        [sys.executable, "-c", MAIN, "ssh", "127.0.0.1", "127.0.0.1",
         "--ssh-port", str(port), "--connect-timeout", "5"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("dcluster: error: cannot reach 1 of 1 hosts over SSH")
