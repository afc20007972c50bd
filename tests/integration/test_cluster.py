"""Process-level behaviour of a CLI-started cluster: kills, signals, restarts, security.

Every process here is a real ``python -m distributed_center`` /
``python -m distributed_worker`` started by the ``spawn``/``cluster``
fixtures; the test talks to them with ``distributed_core.rpc`` only.
"""

from __future__ import annotations

import operator
import time

import pytest

from distributed_core import AuthenticationError, Security
from distributed_core.testing import free_port

HEARTBEAT_GRACE = 5.0  # generous bound for things the center should notice at once


def test_kill_9_worker_is_dropped_with_its_keys_and_the_other_keeps_serving(
    cluster, rpc_client, wait_for
):
    call = rpc_client.call
    center = cluster.center_address
    alice, bob = cluster.workers
    call(alice.address, "update_data", data={"x": 1})
    call(bob.address, "update_data", data={"a": 10, "b": 20})
    assert set(call(center, "workers")) == {alice.address, bob.address}

    bob.kill()
    start = time.monotonic()
    wait_for(
        lambda: set(call(center, "workers")) == {alice.address},
        timeout=HEARTBEAT_GRACE,
        what="the center drops the killed worker",
    )
    # the report stream closed: dropped at once, not after the heartbeat timeout
    assert time.monotonic() - start < 1.5
    assert call(center, "who_has", keys=["x", "a", "b"]) == {"x": [alice.address], "a": [], "b": []}
    assert call(center, "has_what") == {alice.address: ["x"]}

    # Alice keeps computing; an input that only Bob held is reported missing
    reply = call(
        alice.address, "compute", function=operator.neg, key="y", args=("x",), needed=["x"]
    )
    assert reply["status"] == "OK", reply
    assert call(alice.address, "get_data", keys=["y"]) == {"y": -1}
    reply = call(
        alice.address, "compute", function=operator.add, key="z", args=("x", "a"), needed=["x", "a"]
    )
    assert reply == {"status": "missing-data", "key": "z", "keys": ["a"]}
    wait_for(
        lambda: call(center, "who_has", keys=["y"]) == {"y": [alice.address]},
        what="the center lists Alice's new result",
    )


def test_sigterm_worker_exits_0_and_unregisters(cluster, rpc_client, wait_for):
    call = rpc_client.call
    center = cluster.center_address
    alice, bob = cluster.workers
    call(alice.address, "update_data", data={"shared": 1, "only-alice": 2})
    call(bob.address, "update_data", data={"shared": 1, "only-bob": 3})
    assert sorted(call(center, "who_has", keys=["shared"])["shared"]) == sorted(
        [alice.address, bob.address]
    )

    assert bob.terminate() == 0, bob.describe()
    # the worker sends `unregister` on its report stream as it exits; the center
    # reads it a moment later (well before the heartbeat timeout would drop it)
    wait_for(
        lambda: set(call(center, "workers")) == {alice.address},
        timeout=1.0,
        what="the center forgets the worker that exited",
    )
    assert call(center, "who_has", keys=["shared", "only-alice", "only-bob"]) == {
        "shared": [alice.address],
        "only-alice": [alice.address],
        "only-bob": [],
    }
    assert bob.address not in call(center, "has_what")
    assert call(center, "ncores") == {alice.address: 1}


def test_center_restart_on_the_same_port_workers_reregister_with_all_keys(
    spawn, rpc_client, wait_for
):
    call = rpc_client.call
    port = free_port()
    center = spawn.center(port=port)
    alice, bob = spawn.workers(center.address, 2)
    call(alice.address, "update_data", data={f"a-{i}": i for i in range(100)})
    call(bob.address, "update_data", data={f"b-{i}": i for i in range(100)} | {("t", 0): b"x"})
    reply = call(
        alice.address,
        "compute",
        function=operator.add,
        key="z",
        args=("a-1", "b-2"),
        needed=["a-1", "b-2"],
    )
    assert reply["status"] == "OK", reply
    expected = {f"a-{i}": [alice.address] for i in range(100)}
    expected.update({f"b-{i}": [bob.address] for i in range(100)})
    expected.update({("t", 0): [bob.address], "z": [alice.address]})
    wait_for(lambda: call(center.address, "who_has") == expected, what="all keys listed")

    assert center.terminate() == 0, center.describe()
    # while the center is away the workers keep their data and keep serving
    assert call(alice.address, "get_data", keys=["z"]) == {"z": 3}
    call(bob.address, "update_data", data={"late": 1}, report=False)
    expected["late"] = [bob.address]

    center2 = spawn.center(port=port)
    assert center2.address == center.address
    wait_for(
        lambda: call(center2.address, "who_has") == expected,
        timeout=10,
        what="every key listed again by the restarted center",
    )
    assert set(call(center2.address, "workers")) == {alice.address, bob.address}
    assert alice.popen.poll() is None and bob.popen.poll() is None

    # and the cluster works as before: Bob fetches z from Alice through the center
    reply = call(bob.address, "compute", function=operator.neg, key="nz", args=("z",), needed=["z"])
    assert reply["status"] == "OK", reply
    assert call(bob.address, "get_data", keys=["nz"]) == {"nz": -3}


# --------------------------------------------------------------------------- security


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "secret"
    path.write_text("correct horse battery staple\n")  # whitespace around it is ignored
    return path


def _design_example(call, center, alice, bob, security):
    call(alice, "update_data", data={"x": 1}, security=security)
    call(bob, "update_data", data={"a": 10}, security=security)
    reply = call(
        alice,
        "compute",
        function=operator.add,
        key="z",
        args=("x", "a"),
        needed=["x", "a"],
        security=security,
    )
    assert reply["status"] == "OK", reply
    assert call(alice, "get_data", keys=["z"], security=security) == {"z": 11}


def test_shared_secret_on_all_three(spawn, secret_file, rpc_client, wait_for):
    call = rpc_client.call
    center = spawn.center("--secret-file", secret_file)
    alice, bob = spawn.workers(center.address, 2, "--secret-file", secret_file)
    good = Security(secret="correct horse battery staple")

    _design_example(call, center.address, alice.address, bob.address, good)
    wait_for(
        lambda: (
            call(center.address, "who_has", keys=["z"], security=good) == {"z": [alice.address]}
        ),
        what="center lists z on Alice",
    )

    for address in (center.address, alice.address, bob.address):
        with pytest.raises(AuthenticationError, match="shared secret"):
            call(address, "ping")
        with pytest.raises(AuthenticationError, match="different secrets"):
            call(address, "ping", security=Security(secret="wrong"))

    # a worker with the wrong secret cannot join: one error line, exit code 1
    wrong = secret_file.parent / "wrong"
    wrong.write_text("wrong")
    (intruder,) = spawn.workers(center.address, 1, "--secret-file", wrong, wait=False)
    intruder.expected_returncode = 1
    assert intruder.wait() == 1, intruder.describe()
    assert "dworker: error:" in intruder.stderr(), intruder.describe()
    assert set(call(center.address, "workers", security=good)) == {alice.address, bob.address}


def test_tls_and_secret_on_all_three(spawn, secret_file, tmp_path, rpc_client, wait_for):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    ca_file, cert_file = tmp_path / "ca.pem", tmp_path / "node.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
        str(cert_file)
    )
    tls = ["--tls-cert", cert_file, "--tls-key", cert_file, "--tls-ca-file", ca_file]
    center = spawn.center(*tls, "--secret-file", secret_file)
    assert center.address.startswith("tls://127.0.0.1:"), center.address
    alice, bob = spawn.workers(center.address, 2, *tls, "--secret-file", secret_file)
    assert alice.address.startswith("tls://") and bob.address.startswith("tls://")

    good = Security(secret="correct horse battery staple", tls_ca_file=str(ca_file))
    _design_example(call := rpc_client.call, center.address, alice.address, bob.address, good)
    wait_for(
        lambda: (
            call(center.address, "who_has", keys=["z"], security=good) == {"z": [alice.address]}
        ),
        what="center lists z on Alice",
    )
    # right CA, no secret: refused; right secret, CA unknown: the TLS handshake fails
    with pytest.raises(AuthenticationError):
        call(center.address, "ping", security=Security(tls_ca_file=str(ca_file)))
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    with pytest.raises(Exception, match="(?i)certificate|ssl|tls"):
        call(
            alice.address,
            "ping",
            security=Security(secret="correct horse battery staple", tls_ca_file=str(other_ca)),
        )
