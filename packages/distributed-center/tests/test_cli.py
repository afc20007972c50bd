"""``dcenter`` / ``python -m distributed_center`` run as real subprocesses."""

from __future__ import annotations

import asyncio
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

import distributed_center
from distributed_core import Security, connect, default_ip, parse_address, rpc

CMD = [sys.executable, "-m", "distributed_center"]
LINE = re.compile(r"^Start center at (tcp|tls)://127\.0\.0\.1:(\d+)$")


def start(*args, cmd=CMD):
    proc = subprocess.Popen(
        [*cmd, "--host", "127.0.0.1", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = _readline(proc, timeout=20)
    match = LINE.match(line.strip())
    if not match:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"unexpected first line {line!r}; stderr:\n{err}")
    return proc, line.strip().split(" at ", 1)[1]


def _readline(proc, timeout):
    """First stdout line; fails (rather than hangs) if it is not flushed in time."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            proc.kill()
            raise AssertionError(f"no output within {timeout}s (stdout not flushed?)")
        return proc.stdout.readline()
    finally:
        sel.close()


def stop(proc, sig=signal.SIGTERM):
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"center did not exit after {sig!r}") from None
    return proc.returncode, err


def call(center_address, op, /, security=None, **kwargs):
    async def main():
        async with rpc(center_address, security=security) as r:
            return await getattr(r, op)(**kwargs)

    return asyncio.run(main())


def run_failing(*args):
    """Run a center that must fail to start; return (returncode, stderr lines)."""
    result = subprocess.run([*CMD, *args], capture_output=True, text=True, timeout=30, check=False)
    assert result.stdout == ""
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, lines


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_start_answer_identity_and_stop(sig):
    proc, address = start("--port", "0")
    try:
        ident = call(address, "identity")
        assert ident["type"] == "Center"
        assert ident["address"] == address
        call(address, "register", address="tcp://127.0.0.1:1", keys=["x"])
        assert call(address, "who_has", keys=["x"]) == {"x": ["tcp://127.0.0.1:1"]}
    finally:
        code, err = stop(proc, sig)
    assert code == 0, err
    assert "Traceback" not in err


def test_stop_with_a_worker_stream_open():
    proc, address = start("--port", "0")

    async def main():
        comm = await connect(address)
        await comm.write(
            {"op": "register", "reply": False, "stream": True, "address": "tcp://127.0.0.1:1"}
        )
        assert (await comm.read())["status"] == "OK"
        return comm

    async def scenario():
        comm = await main()
        code, err = await asyncio.get_running_loop().run_in_executor(None, stop, proc)
        comm.abort()
        return code, err

    code, err = asyncio.run(scenario())
    assert code == 0, err
    assert "Traceback" not in err


def test_terminate_op_exits_cleanly():
    proc, address = start("--port", "0")
    try:
        assert call(address, "terminate") == "OK"
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
    assert proc.returncode == 0, err


def test_heartbeat_options_are_used():
    proc, address = start(
        "--port", "0", "--heartbeat-interval", "0.1", "--heartbeat-timeout", "0.5"
    )
    try:
        ident = call(address, "identity")
        assert ident["heartbeat_interval"] == 0.1
        assert ident["heartbeat_timeout"] == 0.5
        call(address, "register", address="tcp://127.0.0.1:1", keys=["x"])
        # dropped soon after the 0.5 s timeout: well before the 5 s default,
        # so a center that ignored --heartbeat-timeout fails here
        deadline = time.monotonic() + 2.5
        while call(address, "who_has", keys=["x"]) != {"x": []}:
            assert time.monotonic() < deadline, "worker not dropped after the heartbeat timeout"
            time.sleep(0.05)
    finally:
        stop(proc)


def test_busy_port_is_one_clear_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code, lines = run_failing("--host", "127.0.0.1", "--port", str(port))
    assert code != 0
    assert len(lines) == 1, lines
    assert "already in use" in lines[0] and str(port) in lines[0]


def test_bad_host_is_one_clear_line():
    code, lines = run_failing("--host", "no such host!", "--port", "0")
    assert code != 0
    assert len(lines) == 1, lines
    assert "no such host!" in lines[0]


@pytest.mark.parametrize(
    "args, match",
    [
        (["--tls-cert", "/nonexistent/cert.pem"], "certificate"),
        (["--tls-ca-file", "/nonexistent/ca.pem"], "CA file"),
        (["--secret-file", "/nonexistent/secret"], "secret file"),
    ],
)
def test_bad_security_files_are_one_clear_line(args, match):
    code, lines = run_failing("--port", "0", *args)
    assert code != 0
    assert len(lines) == 1, lines
    assert match in lines[0]


def test_bad_option_values_are_usage_errors():
    code, lines = run_failing("--heartbeat-interval", "2", "--heartbeat-timeout", "1")
    assert code == 2
    assert "--heartbeat-timeout" in lines[-1]


def test_version():
    result = subprocess.run([*CMD, "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert distributed_center.__version__ in result.stdout
    assert result.stdout.startswith("dcenter ")


def test_tls_and_secret(tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_file, key_file, secret_file = tmp_path / "ca.pem", tmp_path / "key.pem", tmp_path / "s"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_and_cert_chain_pem.write_to_path(str(key_file))
    secret_file.write_text("s3cret\n")
    proc, address = start(
        "--port", "0",
        "--tls-cert", str(key_file),
        "--tls-key", str(key_file),
        "--tls-ca-file", str(ca_file),
        "--secret-file", str(secret_file),
        "--require-client-cert",
    )  # fmt: skip
    try:
        assert address.startswith("tls://")
        client = Security(
            secret="s3cret",
            tls_cert=str(key_file),
            tls_key=str(key_file),
            tls_ca_file=str(ca_file),
        )
        assert call(address, "identity", security=client)["type"] == "Center"
        with pytest.raises(Exception):  # noqa: B017, PT011 - TLS or auth error
            call(address, "identity", security=Security(tls_ca_file=str(ca_file)))
    finally:
        code, err = stop(proc)
    assert code == 0, err


@pytest.mark.skipif(shutil.which("dcenter") is None, reason="console script not installed")
def test_console_script():
    proc, address = start("--port", "0", cmd=[shutil.which("dcenter")])
    try:
        assert call(address, "ping") == "pong"
    finally:
        code, _ = stop(proc)
    assert code == 0


def test_main_module_runs_without_package_on_cwd(tmp_path):
    # python -m works from any directory (the package is installed, not local)
    env = {**os.environ, "PYTHONPATH": ""}
    result = subprocess.run(
        [*CMD, "--help"], capture_output=True, text=True, timeout=30, cwd=tmp_path, env=env
    )
    assert result.returncode == 0
    assert "--heartbeat-timeout" in result.stdout


def _start_printing(*args):
    """Start ``dcenter *args``; return (proc, the printed address), whatever its host."""
    proc = subprocess.Popen(
        [*CMD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    line = _readline(proc, timeout=20).strip()
    if not line.startswith("Start center at "):
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"unexpected first line {line!r}; stderr:\n{err}")
    return proc, line.split(" at ", 1)[1]


def test_without_host_listens_everywhere_and_prints_the_default_route_address():
    proc, address = _start_printing("--port", "0")
    try:
        _, host, port = parse_address(address)
        assert host == default_ip()  # from the routing table, not the host name
        # listening on all interfaces: loopback reaches it too
        assert call(f"tcp://127.0.0.1:{port}", "identity")["address"] == address
    finally:
        stop(proc)


@pytest.mark.parametrize("host", ["::1", "::"])
def test_ipv6_host(host):
    proc, address = _start_printing("--host", host, "--port", "0")
    try:
        _, printed, port = parse_address(address)
        assert address == f"tcp://[{printed}]:{port}"
        assert printed == ("::1" if host == "::1" else default_ip(v6=True))
        assert call(f"tcp://[::1]:{port}", "identity")["address"] == address
    finally:
        stop(proc)


def test_contact_address_is_printed_and_given_out():
    # nothing is ever sent to 203.0.113.5 (TEST-NET-3); port 0 means the bound port
    proc, address = _start_printing(
        "--host", "127.0.0.1", "--port", "0", "--contact-address", "tcp://203.0.113.5:0"
    )
    try:
        _, host, port = parse_address(address)
        assert host == "203.0.113.5"
        assert call(f"tcp://127.0.0.1:{port}", "identity")["address"] == address
    finally:
        stop(proc)
    code, lines = run_failing("--port", "0", "--contact-address", "ftp://x:1")
    assert code == 2
    assert any("--contact-address" in ln and "unknown scheme" in ln for ln in lines), lines
