"""The Center's ops over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import platform
import time

import pytest

import distributed_center
import distributed_core
from distributed_center import Center
from distributed_core import (
    PROTOCOL_VERSION,
    CommClosedError,
    Security,
    connect,
    rpc,
)
from distributed_core.testing import gen_test, serve

A = "tcp://127.0.0.1:1001"
B = "tcp://127.0.0.1:1002"


@gen_test()
async def test_identity_and_ping(running_center):
    async with running_center() as center, rpc(center.address) as r:
        assert await r.ping() == "pong"
        ident = await r.identity()
        assert ident["type"] == "Center"
        assert ident["address"] == center.address
        assert ident["versions"]["distributed_center"] == distributed_center.__version__
        assert ident["versions"]["protocol"] == list(PROTOCOL_VERSION)
        assert ident["workers"] == 0 and ident["keys"] == 0
        await r.register(address=A, keys=["x", "y"])
        ident = await r.identity()
        assert ident["workers"] == 1 and ident["keys"] == 2


@gen_test()
async def test_versions_of_center_and_workers(running_center, fake_worker, wait_until):
    """The ``versions`` op (0.2.0): the center's versions and each worker's hello."""
    core = distributed_core.__version__
    async with running_center() as center, rpc(center.address) as r:
        assert await r.versions() == {center.address: (await r.identity())["versions"]}
        w = fake_worker(center.address, A)
        await w.register(keys=["x"])
        await r.register(address=B)  # a plain request: the versions of that connection
        hello = {"distributed_core": core, "protocol": list(PROTOCOL_VERSION)}
        found = await r.versions()
        assert set(found) == {center.address, A, B}
        assert found[center.address]["distributed_center"] == distributed_center.__version__
        for address in (A, B):
            assert found[address] == {**hello, "python": platform.python_version()}
        w.close()  # the stream closes: A is dropped, and so are its versions
        await wait_until(lambda: A not in center.state.workers_map)
        await r.unregister(address=B)
        assert set(await r.versions()) == {center.address}
        assert center.worker_versions == {}


@gen_test()
async def test_register_and_queries(running_center):
    keys = ["s", b"b", 7, ("x", 1), ("y", (2, "z"))]
    async with running_center() as center, rpc(center.address) as r:
        reply = await r.register(
            address=A, keys=keys, ncores=4, name="alice", nbytes={"s": 10, ("x", 1): 20}
        )
        assert reply == {"status": "OK", "heartbeat_interval": 0.2}
        await r.register(address=B, keys=["s"], ncores=2)

        who = await r.who_has(keys=[*keys, "missing"])
        assert who["s"] == sorted([A, B])
        assert who[("x", 1)] == [A]
        assert who[("y", (2, "z"))] == [A]
        assert who[b"b"] == [A] and who[7] == [A]
        assert who["missing"] == []
        assert set(await r.who_has()) == set(keys)

        hw = await r.has_what()
        assert set(hw[A]) == set(keys) and hw[B] == ["s"]
        assert await r.has_what(workers=[B, "tcp://127.0.0.1:9"]) == {
            B: ["s"],
            "tcp://127.0.0.1:9": [],
        }
        assert await r.ncores() == {A: 4, B: 2}
        assert await r.ncores(workers=[A]) == {A: 4}
        assert await r.nbytes() == {"s": 10, ("x", 1): 20}
        assert await r.nbytes(keys=["s", "missing"]) == {"s": 10}

        workers = await r.workers()
        assert workers[A]["name"] == "alice"
        assert workers[A]["ncores"] == 4
        assert workers[A]["nkeys"] == len(keys)
        assert workers[A]["nbytes"] == 30
        assert workers[B]["nbytes"] == 10
        assert abs(workers[A]["last_seen"] - time.time()) < 5


@gen_test()
async def test_add_remove_unregister(running_center):
    async with running_center() as center, rpc(center.address) as r:
        await r.register(address=A)
        assert await r.add_keys(address=A, keys=["x", "y"], nbytes={"x": 3}) == "OK"
        assert await r.who_has(keys=["x", "y"]) == {"x": [A], "y": [A]}
        assert await r.remove_keys(address=A, keys=["x", "unknown"]) == "OK"
        assert await r.who_has(keys=["x", "y"]) == {"x": [], "y": [A]}
        assert await r.nbytes() == {}
        assert await r.unregister(address=A) == "OK"
        assert await r.who_has(keys=["y"]) == {"y": []}
        assert await r.has_what() == {}
        assert await r.unregister(address=A) == "OK"  # idempotent


@gen_test()
async def test_addresses_are_normalized(running_center):
    async with running_center() as center, rpc(center.address) as r:
        await r.register(address="127.0.0.1:1001", keys=["x"])
        assert await r.who_has(keys=["x"]) == {"x": [A]}
        assert await r.has_what(workers=["127.0.0.1:1001"]) == {A: ["x"]}
        await r.add_keys(address="127.0.0.1:1001", keys=["y"])
        assert await r.who_has(keys=["y"]) == {"y": [A]}


@gen_test()
async def test_reregistration_replaces_keys(running_center):
    async with running_center() as center, rpc(center.address) as r:
        await r.register(address=A, keys=["x", "y"], ncores=1)
        await r.register(address=A, keys=["y", "z"], ncores=3)
        assert sorted(await r.has_what(workers=[A]))[0] == A
        assert sorted((await r.has_what())[A]) == ["y", "z"]
        assert await r.who_has(keys=["x"]) == {"x": []}
        assert await r.ncores() == {A: 3}


@gen_test()
async def test_heartbeat(running_center):
    async with running_center() as center, rpc(center.address) as r:
        assert await r.heartbeat(address=A) == "unknown-worker"
        await r.register(address=A)
        assert await r.heartbeat(address=A, memory=1234, executing=2) == "OK"
        info = (await r.workers())[A]
        assert info["metrics"] == {"memory": 1234, "executing": 2}


@gen_test()
async def test_rpc_registered_worker_times_out_without_heartbeats(running_center, wait_until):
    async with (
        running_center(heartbeat_timeout=0.6) as center,
        rpc(center.address) as r,
    ):
        await r.register(address=A, keys=["x"])
        await r.register(address=B, keys=["x"])
        for _ in range(8):  # keep B alive past A's timeout
            await asyncio.sleep(0.1)
            assert await r.heartbeat(address=B) == "OK"
        assert await r.who_has(keys=["x"]) == {"x": [B]}
        assert await r.heartbeat(address=A) == "unknown-worker"


# ------------------------------------------------------------------ delete_data


class Holder:
    """A minimal worker Server that records delete_data calls."""

    def __init__(self):
        self.deleted = []

    def delete_data(self, comm, keys, report=True):
        self.deleted.append((list(keys), report))
        return "OK"


@gen_test()
async def test_delete_data_fans_out_to_holders(running_center):
    h1, h2 = Holder(), Holder()
    async with (
        running_center() as center,
        serve({"delete_data": h1.delete_data}) as w1,
        serve({"delete_data": h2.delete_data}) as w2,
        rpc(center.address) as r,
    ):
        await r.register(address=w1.address, keys=["x", "y", ("t", 1)])
        await r.register(address=w2.address, keys=["x", "z"])
        assert await r.delete_data(keys=["x", ("t", 1), "unknown"]) == "OK"
        assert h1.deleted == [(["x", ("t", 1)], False)]
        assert h2.deleted == [(["x"], False)]
        assert await r.who_has(keys=["x", ("t", 1), "y", "z"]) == {
            "x": [],
            ("t", 1): [],
            "y": [w1.address],
            "z": [w2.address],
        }
        assert await r.delete_data(keys=["nobody-has-this"]) == "OK"


@gen_test()
async def test_delete_data_with_a_dead_holder(running_center):
    live = Holder()
    dead = Holder()
    async with (
        running_center(heartbeat_timeout=1.0) as center,
        rpc(center.address) as r,
    ):
        async with serve({"delete_data": live.delete_data}) as w1:
            async with serve({"delete_data": dead.delete_data}) as w2:
                dead_address = w2.address
            # w2 is gone (connection refused) but still registered
            await r.register(address=w1.address, keys=["x"])
            await r.register(address=dead_address, keys=["x", "y"])
            start = time.monotonic()
            assert await r.delete_data(keys=["x", "y"]) == "OK"
            assert time.monotonic() - start < 5
            assert live.deleted == [(["x"], False)]
            assert dead.deleted == []
            assert await r.who_has(keys=["x", "y"]) == {"x": [], "y": []}
            assert await r.ping() == "pong"


@gen_test()
async def test_delete_data_with_a_holder_that_errors(running_center):
    def broken(comm, keys, report=True):
        raise RuntimeError("disk on fire")

    async with (
        running_center() as center,
        serve({"delete_data": broken}) as w,
        rpc(center.address) as r,
    ):
        await r.register(address=w.address, keys=["x"])
        assert await r.delete_data(keys=["x"]) == "OK"
        assert await r.who_has(keys=["x"]) == {"x": []}


# -------------------------------------------------------------------- bad input


@gen_test()
async def test_bad_requests_get_clear_errors_and_center_keeps_serving(running_center):
    async with running_center() as center, rpc(center.address) as r:
        await r.register(address=A, keys=["x"])
        cases = [
            (lambda: r.no_such_op(), ValueError, "unknown op 'no_such_op'"),
            (lambda: r.who_has(keys=5), TypeError, "keys must be a list"),
            (lambda: r.who_has(keys="x"), TypeError, "wrap a single key in a list"),
            (lambda: r.who_has(keys=[["a", "list"]]), TypeError, "not hashable"),
            (
                lambda: r.who_has(kees=["x"]),
                TypeError,
                "unexpected keyword argument 'kees'",
            ),
            (
                lambda: r.has_what(workers=A),
                TypeError,
                "wrap a single address in a list",
            ),
            (lambda: r.ncores(workers=[5]), TypeError, "address strings"),
            (lambda: r.register(), TypeError, "missing a required argument"),
            (
                lambda: r.register(address=5),
                TypeError,
                "address must be a non-empty string",
            ),
            (lambda: r.register(address=B, ncores="four"), TypeError, "ncores"),
            (lambda: r.register(address="udp://x:1"), ValueError, "unknown scheme"),
            (
                lambda: r.register(address=B, nbytes={"x": -1}),
                TypeError,
                "non-negative",
            ),
            (lambda: r.add_keys(address=B, keys=["y"]), ValueError, "not registered"),
            (lambda: r.delete_data(keys=7), TypeError, "keys must be a list"),
            (lambda: r.delete_data(), TypeError, "missing a required argument"),
        ]
        for call, exc_type, match in cases:
            with pytest.raises(exc_type, match=match):
                await call()
        # nothing changed, and the same pooled connection still works
        assert await r.who_has() == {"x": [A]}
        assert await r.ncores() == {A: 1}


@gen_test()
async def test_raw_garbage_on_one_connection_does_not_hurt_others(running_center):
    async with running_center() as center, rpc(center.address) as r:
        await r.register(address=A, keys=["x"])
        comm = await connect(center.address)
        try:
            await comm.write(["not", "a", "map"])
            reply = await comm.read()
            assert reply["status"] == "error"
            await comm.write({"no": "op"})
            reply = await comm.read()
            assert reply["status"] == "error" and "op" in reply["message"]
            await comm.write({"op": "who_has", "keys": ["x"]})
            assert await comm.read() == {"status": "OK", "result": {"x": [A]}}
        finally:
            comm.abort()
        # a raw socket sending random bytes
        host, port = center.address.rsplit("/", 1)[1].rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(256)) * 10)
        await writer.drain()
        await asyncio.wait_for(reader.read(), 5)  # the center hangs up on it
        writer.close()
        await writer.wait_closed()
        assert await r.who_has(keys=["x"]) == {"x": [A]}


@gen_test()
async def test_center_refuses_pickled_payloads(running_center):
    async with running_center() as center, rpc(center.address) as r:
        await r.register(address=A, keys=["x"])
        with pytest.raises(Exception, match="(?i)pickle"):
            await r.who_has(keys=[lambda: 1])
        assert await r.who_has(keys=["x"]) == {"x": [A]}


# ------------------------------------------------------------ lifecycle/security


@gen_test()
async def test_terminate(running_center):
    async with running_center() as center:
        async with rpc(center.address) as r:
            assert await r.terminate() == "OK"
        await asyncio.wait_for(center.finished(), 5)
        with pytest.raises(CommClosedError):
            await connect(center.address, timeout=0.3)


@gen_test()
async def test_close_is_idempotent_and_drops_streams(running_center, fake_worker):
    async with running_center() as center:
        w = fake_worker(center.address, A)
        await w.register(keys=["x"])
        await center.close()
        await center.close()
        with pytest.raises(CommClosedError):
            await asyncio.wait_for(w.comm.read(), 5)
        w.close()


def test_bad_heartbeat_settings():
    with pytest.raises(ValueError, match="heartbeat_timeout"):
        Center(heartbeat_interval=2, heartbeat_timeout=1)
    with pytest.raises(ValueError, match="heartbeat_interval must be positive"):
        Center(heartbeat_interval=0)


def test_repr():
    assert "not listening" in repr(Center())


@gen_test()
async def test_tls_and_secret(running_center, tmp_path, fake_worker):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_file = tmp_path / "ca.pem"
    key_file = tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_and_cert_chain_pem.write_to_path(str(key_file))
    security = Security(
        secret="s3cret",
        tls_cert=str(key_file),
        tls_key=str(key_file),
        tls_ca_file=str(ca_file),
    )
    holder = Holder()
    async with (
        running_center("tls://127.0.0.1:0", security=security) as center,
        serve({"delete_data": holder.delete_data}, "tls://127.0.0.1:0", security=security) as w,
        rpc(center.address, security=security) as r,
    ):
        assert center.address.startswith("tls://")
        fw = fake_worker(center.address, A, security=security)
        await fw.register(keys=["x"])
        await r.register(address=w.address, keys=["x"])
        assert await r.who_has(keys=["x"]) == {"x": sorted([A, w.address])}
        await r.delete_data(keys=["x"])
        assert holder.deleted == [(["x"], False)]
        fw.close()
        # a peer without the secret is refused
        with pytest.raises(Exception, match="(?i)secret|auth"):
            no_secret = Security(tls_ca_file=str(ca_file))
            async with rpc(center.address, security=no_secret) as bad:
                await bad.ping()
