"""A Center and Workers as separate processes: peer fetch and failures.

Functions sent to worker processes are lambdas or library functions: a
function defined at module level here would be pickled by reference to this
test module, which the worker processes cannot import.
"""

from __future__ import annotations

import operator
import signal
import socket
import time

import numpy as np

from distributed_core.testing import free_port


def test_design_example_alice_fetches_from_bob(cluster, client, wait_for):
    # client: Hey Alice! Compute z <- add(x, a)     (a lives only on Bob)
    center, (alice, bob) = cluster(2)
    client.call(alice.address, "update_data", data={"x": 1})
    client.call(bob.address, "update_data", data={"a": 10})
    reply = client.call(
        alice.address,
        "compute",
        function=operator.add,
        key="z",
        args=("x", "a"),
        needed=["x", "a"],
    )
    assert reply["status"] == "OK" and reply["key"] == "z" and reply["type"] == "int"
    assert "result" not in reply  # metadata only, never the value
    assert client.call(alice.address, "get_data", keys=["z"]) == {"z": 11}
    # Alice: Hey Center! I have z!
    wait_for(
        lambda: client.call(center.address, "who_has", keys=["z"]) == {"z": [alice.address]},
        what="center lists z on alice",
    )
    # Bob still has a; Alice did not keep a copy
    assert client.call(bob.address, "keys") == ["a"]
    assert client.call(center.address, "who_has", keys=["a"]) == {"a": [bob.address]}
    assert sorted(client.call(alice.address, "keys")) == ["x", "z"]


def test_256mib_array_fetched_peer_to_peer(cluster, client):
    center, (a, b) = cluster(2)
    n = 32 * 2**20  # 256 MiB of float64
    reply = client.call(
        a.address, "compute", function=np.arange, key="arr", args=(n,), kwargs={"dtype": "f8"}
    )
    assert reply["status"] == "OK" and reply["nbytes"] == 256 * 2**20
    digest = lambda x: __import__("hashlib").sha256(x).hexdigest()  # noqa: E731
    client.call(a.address, "compute", function=digest, key="h", args=("arr",), needed=["arr"])

    start = time.monotonic()
    reply = client.call(
        b.address,
        "compute",
        function=np.sum,
        key="total",
        args=("arr",),
        needed=["arr"],
        who_has={"arr": [a.address]},
    )
    elapsed = time.monotonic() - start
    assert reply["status"] == "OK", reply
    assert client.call(b.address, "get_data", keys=["total"]) == {"total": n * (n - 1) / 2}
    # and byte for byte, fetched this time through the Center's who_has
    client.call(b.address, "compute", function=digest, key="h", args=("arr",), needed=["arr"])
    assert client.call(a.address, "get_data", keys=["h"]) == client.call(
        b.address, "get_data", keys=["h"]
    )
    assert "arr" not in client.call(b.address, "keys")
    print(f"256 MiB fetch + sum: {elapsed:.3f}s")


def test_kill_9_worker_is_dropped_and_others_keep_serving(cluster, client, wait_for):
    center, (a, b, c) = cluster(3, heartbeat_timeout=2.0)
    for w, key in ((a, "ka"), (b, "kb"), (c, "kc")):
        client.call(w.address, "update_data", data={key: key.upper()})
    b.signal(signal.SIGKILL)
    start = time.monotonic()
    wait_for(
        lambda: b.address not in client.call(center.address, "workers"),
        timeout=5,
        what="center drops the killed worker",
    )
    assert time.monotonic() - start < 3.0
    assert client.call(center.address, "who_has", keys=["kb"]) == {"kb": []}
    assert set(client.call(center.address, "workers")) == {a.address, c.address}
    # the others still serve, fetch from each other, and skip the dead holder
    assert client.call(a.address, "get_data", keys=["ka"]) == {"ka": "KA"}
    reply = client.call(
        c.address,
        "compute",
        function=operator.add,
        key="both",
        args=("ka", "kc"),
        needed=["ka", "kc"],
        who_has={"ka": [b.address, a.address]},
    )
    assert reply["status"] == "OK", reply
    assert client.call(c.address, "get_data", keys=["both"]) == {"both": "KAKC"}
    reply = client.call(a.address, "compute", function=len, key="l", args=("kb",), needed=["kb"])
    assert reply == {"status": "missing-data", "key": "l", "keys": ["kb"]}


def test_sigstop_worker_is_dropped_then_reregisters_on_sigcont(cluster, client, wait_for):
    timeout = 1.0
    center, (a, b) = cluster(2, heartbeat_interval=0.2, heartbeat_timeout=timeout)
    client.call(b.address, "update_data", data={f"k{i}": i for i in range(100)})
    b.signal(signal.SIGSTOP)
    try:
        start = time.monotonic()
        wait_for(
            lambda: b.address not in client.call(center.address, "workers"),
            timeout=timeout + 3,
            what="center drops the stopped worker",
        )
        took = time.monotonic() - start
        assert took < timeout + 1.0, took
        assert client.call(center.address, "who_has", keys=["k0"]) == {"k0": []}
        assert client.call(a.address, "ping") == "pong"
    finally:
        b.signal(signal.SIGCONT)
    wait_for(
        lambda: b.address in client.call(center.address, "workers"),
        timeout=10,
        what="worker re-registers after SIGCONT",
    )
    keys = [f"k{i}" for i in range(100)]
    wait_for(
        lambda: (
            client.call(center.address, "who_has", keys=keys) == dict.fromkeys(keys, [b.address])
        ),
        timeout=5,
        what="all keys listed again",
    )


def test_center_restart_on_same_port_loses_nothing(spawn_center, spawn_worker, client, wait_for):
    port = free_port()
    center = spawn_center(port=port)
    workers = [spawn_worker(center.address, name=f"w{i}") for i in range(2)]
    expected = {}
    for i, w in enumerate(workers):
        data = {f"w{i}-{j}": j for j in range(5000)}
        client.call(w.address, "update_data", data=data)
        expected.update(dict.fromkeys(data, [w.address]))
    assert client.call(center.address, "identity")["keys"] == 10_000

    center.signal(signal.SIGKILL)
    center.p.wait(5)
    # while the center is away, a worker gets more data without reporting it
    client.call(workers[0].address, "update_data", data={"late": 1}, report=False)
    expected["late"] = [workers[0].address]

    center2 = spawn_center(port=port)
    assert center2.address == center.address

    def all_listed():
        who_has = client.call(center2.address, "who_has")
        return who_has == expected

    wait_for(all_listed, timeout=15, interval=0.1, what="every key listed again")
    assert set(client.call(center2.address, "workers")) == {w.address for w in workers}


def test_delete_data_at_center_with_a_hung_holder(cluster, client, wait_for):
    center, (a, b, c) = cluster(3, heartbeat_interval=0.2, heartbeat_timeout=1.5)
    client.call(a.address, "update_data", data={"k": 1, "only-a": 2})
    client.call(b.address, "update_data", data={"k": 1, "n": 3})
    client.call(c.address, "update_data", data={"m": 4, "keep": 5})
    b.signal(signal.SIGSTOP)  # hung: still listed, connection open, no answers
    try:
        start = time.monotonic()
        assert client.call(center.address, "delete_data", keys=["k", "only-a", "n", "m"]) == "OK"
        assert time.monotonic() - start < 5
        assert client.call(a.address, "keys") == []
        assert client.call(c.address, "keys") == ["keep"]
        who_has = client.call(center.address, "who_has", keys=["k", "only-a", "n", "m", "keep"])
        assert who_has == {"k": [], "only-a": [], "n": [], "m": [], "keep": [c.address]}
    finally:
        b.signal(signal.SIGKILL)


def test_delete_data_at_center_with_a_killed_holder(cluster, client):
    center, (a, b) = cluster(2)
    client.call(a.address, "update_data", data={"k": 1})
    client.call(b.address, "update_data", data={"k": 1})
    b.signal(signal.SIGKILL)
    b.p.wait(5)
    assert client.call(center.address, "delete_data", keys=["k"]) == "OK"
    assert client.call(a.address, "keys") == []
    assert client.call(center.address, "who_has", keys=["k"]) == {"k": []}


def test_garbage_and_bad_requests_leave_worker_process_healthy(cluster, client):
    center, (w,) = cluster(1)
    host, port = w.address.removeprefix("tcp://").rsplit(":", 1)
    for payload in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\xff" * 64, b"\x01" + b"\x00" * 7):
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(payload)
            s.settimeout(2)
            try:
                s.recv(1024)
            except (TimeoutError, ConnectionResetError):
                pass
    try:
        client.call(w.address, "no_such_op")
    except ValueError as e:
        assert "unknown op" in str(e)
    reply = client.call(w.address, "compute", function=lambda: (i for i in range(3)), key="g")
    assert reply["status"] == "error"
    assert "cannot be sent over the network" in reply["exception"].message
    assert client.call(w.address, "ping") == "pong"
    assert w.alive()
