"""Self-tests of the simulated-hosts harness (harness.py, relay.py).

Every socket wait here has a bound; "silent" is checked as "nothing within
SILENCE seconds" (a dropped FIN/RST never arrives, so a longer bound would
only make the test slower, not stricter).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from harness import (
    ROOT_IP,
    SUBNET4,
    TABLE,
    HarnessError,
    Hosts,
    leftovers,
    needs_hosts,
    start_center,
    start_worker,
)

pytestmark = needs_hosts

HERE = Path(__file__).resolve().parent
TCPTOOL = str(HERE / "tcptool.py")
PORT = 9000
SILENCE = 1.5  # seconds a silent connection is watched for
IO_TIMEOUT = 20.0  # seconds for a client run that should succeed


def _serve(host, port=PORT, bind="0.0.0.0"):
    proc = host.popen(
        [sys.executable, TCPTOOL, "serve", str(port), "--host", bind],
        watch=True,
        name=f"echo@{host.name}",
    )
    proc.wait_line("listening on ")
    return proc


def _client(host, target_ip, port=PORT, nbytes=1000, pings=3):
    """Run the echo client inside `host`; its JSON report (asserts it succeeded)."""
    done = host.run(
        [sys.executable, TCPTOOL, "client", target_ip, str(port),
         "--bytes", str(nbytes), "--pings", str(pings), "--timeout", str(IO_TIMEOUT)],
        timeout=IO_TIMEOUT + 10,
    )  # fmt: skip
    assert done.returncode == 0, f"client in {host.name} -> {target_ip}: {done.stderr}"
    report = json.loads(done.stdout)
    assert report["eof"] and report["sent_sha"] == report["echo_sha"], report
    assert report["echoed"] == nbytes
    return report


def _connect_fails_silently(host, target_ip, port=PORT):
    """A connect from `host` to target gets no answer (times out, is not refused)."""
    script = textwrap.dedent(f"""
        import socket, sys
        try:
            socket.create_connection(({target_ip!r}, {port}), timeout={SILENCE})
        except socket.timeout:
            sys.exit(0)
        except OSError as e:
            sys.exit(f"not silent: {{e!r}}")
        sys.exit("connected")
    """)
    done = host.run([sys.executable, "-c", script], timeout=SILENCE + 10)
    assert done.returncode == 0, f"{host.name} -> {target_ip}: {done.stderr.strip()}"


def _root_echo_server():
    """An echo server in the root namespace on the bridge address (a thread)."""
    import threading

    server = socket.create_server((ROOT_IP, 0))
    server.settimeout(IO_TIMEOUT)

    def run():
        with server:
            for _ in range(8):
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                with conn:
                    conn.settimeout(IO_TIMEOUT)
                    while data := conn.recv(1 << 16):
                        conn.sendall(data)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return server, server.getsockname()[1]


def test_hosts_reach_each_other_and_the_root(hosts):
    hs = hosts(3)
    assert [h.ip for h in hs] == ["10.213.7.10", "10.213.7.11", "10.213.7.12"]
    for h in hs:
        _serve(h)
    for a in hs:
        for b in hs:
            if a is not b:
                _client(a, b.ip)
    # the root namespace reaches every host...
    for h in hs:
        with socket.create_connection((h.ip, PORT), timeout=IO_TIMEOUT) as c:
            c.sendall(b"x")
            assert c.recv(1) == b"x"
    # ... and every host reaches the root
    server, port = _root_echo_server()
    try:
        for h in hs:
            _client(h, ROOT_IP, port=port)
    finally:
        server.close()


def test_routes_stay_inside_the_bridge(hosts):
    forward_before = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    ruleset_before = subprocess.run(
        ["nft", "list", "ruleset"], capture_output=True, text=True, check=True
    ).stdout
    hs = hosts(2)
    for h in hs:
        routes = json.loads(h.ip_cmd("-j", "-4", "route", "show", "table", "all"))
        main = {(r["dst"], r.get("gateway")) for r in routes if r.get("table", "main") == "main"}
        assert main == {("default", ROOT_IP), (str(SUBNET4), None)}, routes
        # the local table only holds the host's own and loopback addresses
        for r in routes:
            if r.get("table") == "local":
                assert r["dev"] in ("lo", "eth0"), r
        assert json.loads(h.ip_cmd("-j", "-6", "route", "show", "table", "all")) == []
        ruleset = h.nft("list", "table", "inet", TABLE)
        assert f"ip daddr {{ {SUBNET4}, 127.0.0.0/8 }} accept" in ruleset, ruleset
        assert "drop" in ruleset
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == forward_before
    ruleset_after = subprocess.run(
        ["nft", "list", "ruleset"], capture_output=True, text=True, check=True
    ).stdout
    assert ruleset_after == ruleset_before  # nothing added in the root namespace


def test_blackhole_is_silent_and_heal_restores(hosts):
    hs = hosts(2)
    h0, h1 = hs
    server = _serve(h1)
    conn = socket.create_connection((h1.ip, PORT), timeout=IO_TIMEOUT)
    conn.sendall(b"a")
    assert conn.recv(1) == b"a"

    h1.blackhole()
    # a new connect times out, even to a port nobody listens on (no RST)
    _connect_fails_silently(h0, h1.ip)
    _connect_fails_silently(h0, h1.ip, port=PORT + 1)
    with pytest.raises(socket.timeout):
        socket.create_connection((h1.ip, PORT), timeout=SILENCE)
    # the established connection goes silent: the server dies (its FIN or RST is
    # dropped) and our recv just waits
    server.kill_group()
    conn.settimeout(SILENCE)
    conn.sendall(b"b")
    with pytest.raises(socket.timeout):
        conn.recv(1)
    conn.close()

    h1.heal()
    _serve(h1)
    _client(h0, h1.ip)


def test_partition_blocks_only_that_pair(hosts):
    hs = hosts(3)
    h0, h1, h2 = hs
    for h in hs:
        _serve(h)
    h0.partition(h1)
    _connect_fails_silently(h0, h1.ip)
    _connect_fails_silently(h1, h0.ip)
    for a, b in ((h0, h2), (h2, h0), (h1, h2), (h2, h1)):
        _client(a, b.ip)
    for h in (h0, h1):
        with socket.create_connection((h.ip, PORT), timeout=IO_TIMEOUT) as c:
            c.sendall(b"x")
            assert c.recv(1) == b"x"
    h1.heal()  # heal on either side lifts the partition in both
    _client(h0, h1.ip)
    _client(h1, h0.ip)


def test_latency_relay_delays_and_passes_bytes_exactly(hosts):
    hs = hosts(2)
    h0, h1 = hs
    _serve(h1)
    delay_ms = 100
    hs.add_latency(h0, delay_ms)
    # 4 MB echoed through the relay both ways, byte-exact; the client's
    # half-close reaches the server through the relay and the server's close
    # comes back (the client reads to EOF), so close propagates both ways.
    report = _client(h0, h1.ip, nbytes=4 << 20, pings=3)
    assert report["rtt_min"] >= delay_ms / 1000
    # connections into h0 are not delayed, and h1's own connections neither
    _serve(h0)
    _client(h1, h0.ip)
    hs.remove_latency(h0)
    assert _client(h0, h1.ip)["eof"]


def test_ipv6_hosts_and_latency(hosts):
    hs = hosts(2, ipv6=True)
    h0, h1 = hs
    assert h0.ip6 == "fd42:d157:7::10" and h1.ip6 == "fd42:d157:7::11"
    _serve(h1, bind="::")
    _client(h0, h1.ip6)
    with socket.create_connection((h1.ip6, PORT), timeout=IO_TIMEOUT) as c:
        c.sendall(b"6")
        assert c.recv(1) == b"6"
    hs.add_latency(h0, 60)
    report = _client(h0, h1.ip6, nbytes=1 << 20)
    assert report["rtt_min"] >= 0.06
    hs.remove_latency(h0)  # through the relay, a connect succeeds locally (see relay.py)
    h1.blackhole()
    _connect_fails_silently(h0, h1.ip6)
    with pytest.raises(socket.timeout):
        socket.create_connection((h1.ip6, PORT), timeout=SILENCE)


def test_cleanup_after_an_exception_inside_with():
    with pytest.raises(ZeroDivisionError):
        with Hosts(2) as hs:
            sleeper = hs[0].popen(["sleep", "600"])
            hs[1].blackhole()
            hs.add_latency(hs[0], 10)
            assert leftovers(os.getpid())
            1 / 0  # noqa: B018
    assert sleeper.poll() is not None
    assert leftovers(os.getpid()) == []
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert TABLE not in tables


def test_cleanup_on_sigterm_and_sweep_of_dead_runs(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(f"""
            import sys, time
            sys.path.insert(0, {str(HERE)!r})
            from harness import Hosts
            with Hosts(2) as hs:
                hs[0].popen(["sleep", "600"])
                print("ready", flush=True)
                time.sleep(600)
        """)
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert leftovers(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == -signal.SIGTERM  # cleaned up, then the signal re-raised
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert leftovers(proc.pid) == []

    # a run killed with SIGKILL cannot clean up: the next Hosts sweeps it
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert leftovers(proc.pid)
    with Hosts(1):
        assert leftovers(proc.pid) == []


def test_cluster_helpers(hosts):
    hs = hosts(3)
    center, address = start_center(hs[0], "--host", hs[0].ip, "--port", "0")
    assert address.startswith(f"tcp://{hs[0].ip}:")
    _, worker = start_worker(hs[1], address, "--ncores", "1")
    assert worker.startswith(f"tcp://{hs[1].ip}:")
    # a failure shows the process's output
    with pytest.raises(HarnessError, match="Start worker at|Registered with center"):
        start_worker(hs[2], "tcp://10.213.7.11:1", "--connect-timeout", "1", timeout=15)
    assert center.poll() is None
