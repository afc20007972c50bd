"""Secure by default (issue 12): the default secret file, ``--insecure``, the default port.

Every process here runs with its own HOME (and ``DISTRIBUTED_SECRET_FILE``
empty), so the default secret file is ``HOME/.config/distributed/secret``;
the test process's own connections use the same HOME through ``monkeypatch``.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import stat
import subprocess
import sys

import pytest

from distributed_core import AuthenticationError, Security, dumps, rpc
from distributed_core.comm import PROTOCOL_VERSION
from distributed_core.protocol import pack_frames

SECRET = os.path.join(".config", "distributed", "secret")


def node_env(home) -> dict:
    return {"HOME": str(home), "DISTRIBUTED_SECRET_FILE": ""}


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh HOME for this process and the nodes it starts."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("HOME", str(path))
    monkeypatch.delenv("DISTRIBUTED_SECRET_FILE", raising=False)
    return path


def call(address, op, security=None, **kwargs):
    async def main():
        async with rpc(address, security=security, connect_timeout=10) as r:
            return await getattr(r, op)(**kwargs)

    return asyncio.run(main())


def start_default_cluster(procs, home):
    center = procs("center", "distributed_center", "--host", "127.0.0.1", "--port", "0", home=home)
    address = center.wait_line("Start center at ")
    worker = procs("worker", "distributed_worker", address, "--host", "127.0.0.1", home=home)
    worker_address = worker.wait_line("Start worker at ")
    worker.wait_line("Registered with center at ")
    return center, address, worker, worker_address


def test_default_center_creates_the_secret_file_and_workers_find_it(procs, home):
    center, address, _, worker_address = start_default_cluster(procs, home)
    path = home / SECRET
    note = center.wait_line("Peers must prove they know the secret in ")
    assert note == f"{path} (created now, mode 0600)."
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(path.read_text().strip()) == 64
    # a client of the same user on the same machine needs no options
    assert list(call(address, "workers")) == [worker_address]
    assert call(worker_address, "identity")["type"] == "Worker"


@pytest.mark.parametrize("target", ["center", "worker"])
def test_a_peer_without_the_secret_is_refused_and_told_how_to_get_it(
    procs, home, tmp_path, monkeypatch, wait_for, target
):
    center, address, worker, worker_address = start_default_cluster(procs, home)
    node, node_address = (center, address) if target == "center" else (worker, worker_address)
    other = tmp_path / "other-home"
    other.mkdir()
    monkeypatch.setenv("HOME", str(other))  # another user: no secret file
    with pytest.raises(AuthenticationError) as info:
        call(node_address, "identity")
    text = str(info.value)
    assert "requires a shared secret" in text
    assert "copy the secret file from the center's machine" in text
    assert str(other / SECRET) in text
    # the node refused at the handshake and keeps serving
    wait_for(lambda: "did not authenticate" in node.stderr(), what="the refusal is logged")
    monkeypatch.setenv("HOME", str(home))
    assert call(node_address, "identity")["type"] in ("Center", "Worker")


def test_nothing_is_unpickled_before_authentication(procs, home, tmp_path):
    """A peer that skips authentication and sends a pickle: the worker never loads it."""
    _, _, _, worker_address = start_default_cluster(procs, home)
    marker = tmp_path / "unpickled"
    evil = _Evil(str(marker))
    host, port = worker_address.rsplit("/", 1)[1].rsplit(":", 1)
    hello = {
        "distributed": "hello", "protocol": list(PROTOCOL_VERSION), "package": "distributed-core",
        "version": "0.2.0", "python": "%d.%d.%d" % sys.version_info[:3], "role": "connector",
        "name": "intruder", "auth": False, "nonce": os.urandom(32),
    }  # fmt: skip
    request = {"op": "update_data", "data": {"x": evil}, "reply": True}
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(pack_frames(dumps(hello)) + pack_frames(dumps(request)))
        sock.settimeout(10)
        while sock.recv(65536):  # the worker's hello, then it closes the connection
            pass
    assert not marker.exists()


class _Evil:
    """Unpickling this creates a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_three_terminals_with_no_options(procs, home):
    """`dcenter`, `dworker ADDRESS`, `Executor(ADDRESS)`: no option anywhere."""
    center = procs("center", "distributed_center", home=home)
    address = center.wait_line("Start center at ")
    worker = procs("worker", "distributed_worker", address, home=home)
    worker.wait_line("Registered with center at ")
    script = (
        "import sys, operator\n"
        "from distributed_client import Executor\n"
        "with Executor(sys.argv[1]) as e:\n"
        "    print(sorted(f.result() for f in e.map(operator.neg, range(10))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, address],
        capture_output=True, text=True, timeout=60, env={**os.environ, **node_env(home)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(sorted(-i for i in range(10)))


def test_worker_without_the_secret_file_says_how_to_get_it(home):
    out = subprocess.run(
        [sys.executable, "-m", "distributed_worker", "tcp://127.0.0.1:1"],
        capture_output=True, text=True, timeout=60, env={**os.environ, **node_env(home)},
    )  # fmt: skip
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert f"no secret: {home / SECRET} does not exist" in lines[0]
    assert "scp" in lines[0] and "--insecure" in lines[0]


def test_insecure_accepts_unauthenticated_peers_and_warns(procs, home, tmp_path, monkeypatch):
    # all interfaces: the warning names the risk
    center = procs("center", "distributed_center", "--insecure", "--port", "0", home=home)
    address = center.wait_line("Start center at ")
    worker = procs("worker", "distributed_worker", address, "--insecure", home=home)
    worker.wait_line("Registered with center at ")
    assert "--insecure: any process that can reach this center's port" in center.stderr()
    assert "run arbitrary code" in center.stderr()
    assert "--insecure: any process that can reach this worker's port" in worker.stderr()
    assert not (home / SECRET).exists()
    # an unauthenticated peer is accepted ...
    assert call(address, "identity", security=Security())["type"] == "Center"
    # ... and so is a client whose default secret file exists (it only uses it when asked)
    (home / SECRET).parent.mkdir(parents=True)
    (home / SECRET).write_text("some secret\n")
    assert len(call(address, "workers")) == 1


def test_insecure_on_loopback_does_not_warn(procs, home):
    center = procs(
        "center", "distributed_center", "--insecure", "--host", "127.0.0.1", "--port", "0",
        home=home,
    )  # fmt: skip
    address = center.wait_line("Start center at ")
    assert call(address, "identity", security=Security())["type"] == "Center"
    assert "--insecure" not in center.stderr()


def test_busy_default_port_is_replaced_and_printed(procs, home):
    blocker = socket.socket()
    try:
        try:
            blocker.bind(("127.0.0.1", 8787))
            blocker.listen()
        except OSError as e:  # busy already: that is what this test needs
            assert e.errno == errno.EADDRINUSE
        center = procs("center", "distributed_center", "--host", "127.0.0.1", home=home)
        address = center.wait_line("Start center at ")
        port = int(address.rsplit(":", 1)[1])
        assert port != 8787
        assert f"port 8787 is already in use; listening on port {port} instead" in center.stderr()
    finally:
        blocker.close()


def test_insecure_with_a_secret_file_is_a_usage_error(home, tmp_path):
    secret = tmp_path / "s"
    secret.write_text("x")
    out = subprocess.run(
        [sys.executable, "-m", "distributed_center", "--insecure", "--secret-file", str(secret)],
        capture_output=True, text=True, timeout=60, env={**os.environ, **node_env(home)},
    )  # fmt: skip
    assert out.returncode == 2
    assert "--insecure cannot be combined" in out.stderr
