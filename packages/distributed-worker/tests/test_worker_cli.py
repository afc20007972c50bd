"""The dworker command line, run as ``python -m distributed_worker``."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from distributed_core.testing import free_port
from distributed_worker import __version__


def run_cli(*args, timeout=30):
    return subprocess.run(
        [sys.executable, "-m", "distributed_worker", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("dworker: error: "), lines[0]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_start_register_and_signal_shutdown(spawn_center, spawn_worker, client, wait_for, sig):
    center = spawn_center()
    w = spawn_worker(center.address, "--ncores", "3", name="cli-worker")
    assert w.lines[0] == f"Start worker at {w.address}"
    assert w.lines[1] == f"Registered with center at {center.address}"
    assert w.address.startswith("tcp://127.0.0.1:")
    client.call(w.address, "update_data", data={"x": 1})
    info = client.call(center.address, "workers")[w.address]
    assert info["ncores"] == 3 and info["name"] == "cli-worker"
    ident = client.call(w.address, "identity")
    assert ident["ncores"] == 3 and ident["center"] == center.address

    w.signal(sig)
    assert w.p.wait(10) == 0, w.read_stderr()
    assert "Traceback" not in w.read_stderr()
    wait_for(
        lambda: client.call(center.address, "workers") == {},
        timeout=3,
        what="worker unregistered",
    )
    assert client.call(center.address, "who_has", keys=["x"]) == {"x": []}


def test_terminate_op_exits_zero(spawn_center, spawn_worker, client):
    center = spawn_center()
    w = spawn_worker(center.address)
    assert client.call(w.address, "terminate") == "OK"
    assert w.p.wait(10) == 0, w.read_stderr()


def test_port_option_and_busy_port(spawn_center, spawn_worker):
    center = spawn_center()
    port = free_port()
    w = spawn_worker(center.address, "--port", str(port))
    assert w.address == f"tcp://127.0.0.1:{port}"
    result = run_cli(center.address, "--host", "127.0.0.1", "--port", str(port))
    assert_one_line_error(result, "already in use", str(port))


def test_busy_port_held_by_another_program():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = run_cli("tcp://127.0.0.1:1", "--host", "127.0.0.1", "--port", str(port))
    assert_one_line_error(result, "already in use")


def test_unreachable_center():
    port = free_port()
    start = time.monotonic()
    result = run_cli(f"tcp://127.0.0.1:{port}", "--host", "127.0.0.1", "--connect-timeout", "0.5")
    assert time.monotonic() - start < 10
    assert_one_line_error(result, f"127.0.0.1:{port}", "is dcenter running")
    assert result.stdout.startswith("Start worker at tcp://127.0.0.1:")


def test_bad_center_address():
    assert_one_line_error(run_cli("nonsense"), "nonsense", "port")
    assert_one_line_error(run_cli("http://127.0.0.1:8787"), "scheme")
    assert_one_line_error(run_cli("127.0.0.1:99999"), "out of range")


def test_bad_host():
    result = run_cli("tcp://127.0.0.1:1", "--host", "256.1.1.1")
    assert_one_line_error(result, "cannot listen on")


def test_missing_secret_file():
    result = run_cli("tcp://127.0.0.1:1", "--secret-file", "/nonexistent/secret")
    assert_one_line_error(result, "secret")


def test_version_and_help():
    result = run_cli("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout and "dworker" in result.stdout
    result = run_cli("--help")
    assert result.returncode == 0
    for option in ("--host", "--port", "--ncores", "--name", "--heartbeat-interval",
                   "--secret-file", "--tls-cert", "--tls-key", "--tls-ca-file",
                   "--connect-timeout", "--version"):  # fmt: skip
        assert option in result.stdout


def test_sigint_while_waiting_for_center_exits_cleanly(spawn_worker):
    port = free_port()
    proc = spawn_worker(f"tcp://127.0.0.1:{port}", wait_registered=False)
    time.sleep(0.3)
    proc.signal(signal.SIGINT)
    assert proc.p.wait(10) == 0, proc.read_stderr()
    assert "Traceback" not in proc.read_stderr()


@pytest.mark.skipif(shutil.which("dworker") is None, reason="console script not installed")
def test_console_script_version():
    result = subprocess.run(["dworker", "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and __version__ in result.stdout


def test_log_format_json(spawn_center, spawn_worker):
    import json

    center = spawn_center()
    worker = spawn_worker(center.address, "--log-format", "json", "--log-level", "info")
    worker.signal(signal.SIGTERM)
    worker.p.wait(20)
    records = [json.loads(line) for line in worker.read_stderr().splitlines() if line.strip()]
    assert records
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r["logger"].startswith("distributed_worker") for r in records)
