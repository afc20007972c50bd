"""Worker ops against an in-process Center, over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import operator
import threading
import time

import numpy as np
import pytest

from distributed_center import Center
from distributed_core import Failure, RemoteTraceback, rpc
from distributed_core.testing import gen_test
from distributed_worker import Worker
from distributed_worker.sizeof import sizeof  # dask.sizeof when importable


@contextlib.asynccontextmanager
async def local_cluster(n=2, **worker_kwargs):
    center = Center(heartbeat_interval=0.2, heartbeat_timeout=2)
    await center.listen("tcp://127.0.0.1:0")
    workers = []
    try:
        for i in range(n):
            w = Worker(center.address, ncores=2, name=f"w{i}", **worker_kwargs)
            await w.start("tcp://127.0.0.1:0")
            workers.append(w)
        yield center, workers
    finally:
        for w in workers:
            await w.close()
        await center.close()


@contextlib.asynccontextmanager
async def rpcs(*addresses):
    rs = [rpc(a) for a in addresses]
    try:
        yield rs
    finally:
        for r in rs:
            await r.close_rpc()


async def until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def boom(x):
    raise ValueError(f"bad value {x}")


@gen_test()
async def test_compute_local_and_reply_metadata():
    async with local_cluster(1) as (center, (w,)), rpcs(w.address, center.address) as (r, c):
        await r.update_data(data={"x": np.arange(10)})
        reply = await r.compute(
            function=np.sum, key="s", args=("x",), needed=["x"], kwargs={"dtype": "f8"}
        )
        duration = reply.pop("duration")
        assert isinstance(duration, float) and duration >= 0
        assert reply == {
            "status": "OK",
            "key": "s",
            "nbytes": sizeof(np.float64(0)),
            "type": "numpy.float64",
        }
        assert await r.get_data(keys=["s"]) == {"s": 45.0}
        assert await r.keys() == ["x", "s"]
        await until(lambda: _equal(c.who_has(keys=["s"]), {"s": [w.address]}))


@gen_test()
async def test_nested_substitution_and_tuple_keys():
    async with local_cluster(1) as (center, (w,)), rpcs(w.address) as (r,):
        await r.update_data(data={("x", 0): 1, ("x", 1): 2, "y": 10})
        reply = await r.compute(
            function=lambda pair, d: sum(pair) + d["y"],
            key=("z", 0),
            args=([("x", 0), ("x", 1)],),
            kwargs={"d": {"y": "y"}},
            needed=[("x", 0), ("x", 1), "y"],
        )
        assert reply["status"] == "OK"
        assert await r.get_data(keys=[("z", 0)]) == {("z", 0): 13}


@gen_test()
async def test_update_data_report_is_known_at_center_on_return():
    async with local_cluster(1) as (center, (w,)), rpcs(w.address, center.address) as (r, c):
        for i in range(20):
            result = await r.update_data(data={f"k{i}": b"x" * i})
            assert result == {"keys": [f"k{i}"], "nbytes": {f"k{i}": i}}
            assert (await c.who_has(keys=[f"k{i}"])) == {f"k{i}": [w.address]}
        # delete then re-add the same key at once: the stale removal must not win
        for _ in range(5):
            await r.delete_data(keys=["k1"])
            await r.update_data(data={"k1": b"again"})
            assert (await c.who_has(keys=["k1"])) == {"k1": [w.address]}
        await asyncio.sleep(0.05)
        assert (await c.who_has(keys=["k1"])) == {"k1": [w.address]}
        await r.update_data(data={"quiet": 1}, report=False)
        await asyncio.sleep(0.05)
        assert (await c.who_has(keys=["quiet"])) == {"quiet": []}


@gen_test()
async def test_delete_data_reports_and_ignores_unknown():
    async with local_cluster(1) as (center, (w,)), rpcs(w.address, center.address) as (r, c):
        await r.update_data(data={"a": 1, "b": 2})
        assert await r.delete_data(keys=["a", "never-there"]) == "OK"
        assert await r.keys() == ["b"]
        await until(lambda: _equal(c.who_has(keys=["a", "b"]), {"a": [], "b": [w.address]}))
        await r.delete_data(keys=["b"], report=False)
        await asyncio.sleep(0.05)
        assert (await c.who_has(keys=["b"])) == {"b": [w.address]}


async def _equal(coro, expected):
    return (await coro) == expected


@gen_test()
async def test_failure_is_stored_and_reraised_with_remote_traceback():
    async with local_cluster(1) as (center, (w,)), rpcs(w.address, center.address) as (r, c):
        reply = await r.compute(function=boom, key="bad", args=(3,))
        assert reply["status"] == "error" and reply["key"] == "bad"
        assert isinstance(reply["exception"], Failure)
        stored = (await r.get_data(keys=["bad"]))["bad"]
        assert isinstance(stored, Failure)
        with pytest.raises(ValueError, match="bad value 3") as info:
            stored.reraise()
        assert isinstance(info.value.__cause__, RemoteTraceback)
        assert "in boom" in str(info.value.__cause__)
        # the center lists the key, so whoever gathers it gets the error
        await until(lambda: _equal(c.who_has(keys=["bad"]), {"bad": [w.address]}))
        # a compute using a failed input fails with the same exception
        reply = await r.compute(function=operator.neg, key="child", args=("bad",), needed=["bad"])
        assert reply["status"] == "error"
        with pytest.raises(ValueError, match="bad value 3"):
            reply["exception"].reraise()


@gen_test()
async def test_system_exit_in_function_does_not_stop_worker():
    import sys

    async with local_cluster(1) as (center, (w,)), rpcs(w.address) as (r,):
        reply = await r.compute(function=sys.exit, key="x", args=(3,))
        assert reply["status"] == "error"
        assert reply["exception"].type_name == "SystemExit"
        assert await r.ping() == "pong"


@gen_test()
async def test_alice_fetches_from_bob_via_center():
    async with local_cluster(2) as (center, (alice, bob)):
        async with rpcs(alice.address, bob.address, center.address) as (ra, rb, c):
            await ra.update_data(data={"x": 1})
            await rb.update_data(data={"a": 10})
            reply = await ra.compute(
                function=operator.add, key="z", args=("x", "a"), needed=["x", "a"]
            )
            reply.pop("duration")
            assert reply == {"status": "OK", "key": "z", "nbytes": reply["nbytes"], "type": "int"}
            assert await ra.get_data(keys=["z"]) == {"z": 11}
            assert "a" not in await ra.keys()  # fetched inputs are not kept (no keep_inputs)
            assert await rb.keys() == ["a"]


@gen_test()
async def test_keep_inputs_keeps_fetched_inputs_as_reported_replicas():
    async with local_cluster(2) as (center, (alice, bob)):
        async with rpcs(alice.address, bob.address, center.address) as (ra, rb, c):
            await rb.update_data(data={"a": 10})
            reply = await ra.compute(
                function=operator.neg, key="z", args=("a",), needed=["a"], keep_inputs=True
            )
            assert reply["status"] == "OK"
            assert set(reply["fetched"]) == {"a"}
            assert sorted(await ra.keys()) == ["a", "z"]

            # the center lists the replica, so later fetches can use it
            async def both_hold():
                holders = (await c.who_has(keys=["a"]))["a"]
                return sorted(holders) == sorted([alice.address, bob.address])

            await until(both_hold)
            again = await ra.compute(
                function=operator.neg, key="z2", args=("a",), needed=["a"], keep_inputs=True
            )
            assert "fetched" not in again  # already held: nothing new


@gen_test()
async def test_pending_input_sent_later_on_another_connection():
    async with local_cluster(1) as (center, (w,)):
        async with rpcs(w.address, w.address) as (r1, r2):
            # the dependent arrives first and waits for its input's compute
            dependent = asyncio.ensure_future(
                r1.compute(function=operator.neg, key="y", args=("x",), needed=["x"], pending=["x"])
            )
            await until(lambda: len(w.arrivals) == 1)
            first = await r2.compute(function=operator.add, key="x", args=(20, 22))
            assert first["status"] == "OK"
            reply = await dependent
            assert reply["status"] == "OK"
            assert await r1.get_data(keys=["y"]) == {"y": -42}


@gen_test()
async def test_pending_input_that_erred_fails_the_dependent():
    async with local_cluster(1) as (center, (w,)):
        async with rpcs(w.address, w.address) as (r1, r2):
            dependent = asyncio.ensure_future(
                r1.compute(function=operator.neg, key="y", args=("x",), needed=["x"], pending=["x"])
            )
            await until(lambda: len(w.arrivals) == 1)
            assert (await r2.compute(function=operator.truediv, key="x", args=(1, 0)))[
                "status"
            ] == "error"
            reply = await dependent
            assert reply["status"] == "error"
            assert reply["exception"].type_name == "ZeroDivisionError"


@gen_test()
async def test_pending_input_that_never_comes_is_missing_after_fetch_timeout():
    async with local_cluster(1, fetch_timeout=0.3) as (center, (w,)):
        async with rpcs(w.address) as (r,):
            reply = await r.compute(
                function=operator.neg, key="y", args=("x",), needed=["x"], pending=["x"]
            )
            assert reply == {"status": "missing-data", "key": "y", "keys": ["x"]}
            assert len(w.arrivals) == 0  # no entry left behind


@gen_test()
async def test_who_has_hint_fallbacks():
    async with local_cluster(3, peer_connect_timeout=0.5) as (center, (a, b, c3)):
        async with rpcs(a.address, b.address) as (ra, rb):
            await rb.update_data(data={"y": 5})
            # a dead address, then a worker without the key, then nothing: the
            # worker falls back to the Center, which knows b holds it
            dead = "tcp://127.0.0.1:1"
            reply = await ra.compute(
                function=operator.neg,
                key="n",
                args=("y",),
                needed=["y"],
                who_has={"y": [dead, c3.address]},
            )
            assert reply["status"] == "OK", reply
            assert await ra.get_data(keys=["n"]) == {"n": -5}


@gen_test()
async def test_missing_data_names_keys():
    async with local_cluster(2) as (center, (a, b)), rpcs(a.address) as (ra,):
        await ra.update_data(data={"x": 1})
        start = time.monotonic()
        reply = await ra.compute(
            function=operator.add, key="z", args=("x", "nope"), needed=["x", "nope"]
        )
        assert reply == {"status": "missing-data", "key": "z", "keys": ["nope"]}
        assert time.monotonic() - start < 2
        assert "z" not in await ra.keys()


@gen_test()
async def test_concurrent_computes_share_one_fetch():
    async with local_cluster(2) as (center, (a, b)), rpcs(a.address, b.address) as (ra, rb):
        await rb.update_data(data={"big": np.ones(2_000_000)})
        replies = await asyncio.gather(
            *(
                ra.compute(function=np.sum, key=f"s{i}", args=("big",), needed=["big"])
                for i in range(8)
            )
        )
        assert all(r["status"] == "OK" for r in replies)
        data = await ra.get_data(keys=[f"s{i}" for i in range(8)])
        assert set(data.values()) == {2_000_000.0}
        assert a._fetching == {}


@gen_test()
async def test_event_loop_not_blocked_by_compute():
    async with local_cluster(1) as (center, (w,)), rpcs(w.address) as (r,):
        slow = asyncio.ensure_future(r.compute(function=time.sleep, key="s", args=(0.6,)))
        await asyncio.sleep(0.1)
        start = time.monotonic()
        assert await r.ping() == "pong"
        assert await r.keys() == []
        assert time.monotonic() - start < 0.3
        assert (await slow)["status"] == "OK"


@gen_test()
async def test_identity_and_large_values_out_of_band():
    async with local_cluster(1) as (center, (w,)), rpcs(w.address) as (r,):
        arr = np.arange(1_000_000, dtype="f8")
        await r.update_data(data={"arr": arr, "blob": b"z" * 1_000_000})
        ident = await r.identity()
        assert ident["type"] == "Worker"
        assert ident["address"] == w.address
        assert ident["center"] == center.address
        assert ident["ncores"] == 2 and ident["name"] == "w0"
        assert ident["keys"] == 2
        assert ident["nbytes"] == 9_000_000
        assert ident["memory"] > 0
        got = await r.get_data(keys=["arr", "blob"])
        np.testing.assert_array_equal(got["arr"], arr)
        assert got["blob"] == b"z" * 1_000_000


class _Unpicklable:
    def __reduce__(self):
        raise TypeError("no pickling this")


def _gen():
    yield 1


@gen_test()
async def test_bad_input_gets_clear_errors_and_worker_stays_healthy():
    async with local_cluster(1) as (center, (w,)), rpcs(w.address) as (r,):
        with pytest.raises(ValueError, match="unknown op 'frobnicate'"):
            await r.frobnicate(x=1)
        with pytest.raises(TypeError, match="function must be callable"):
            await r.compute(function=5, key="k")
        with pytest.raises(TypeError, match="hashable"):
            await r.compute(function=len, key=["a", "list"], args=("abc",))
        with pytest.raises(TypeError, match="args must be a list or tuple"):
            await r.compute(function=len, key="k", args=5)
        with pytest.raises(TypeError, match="kwargs must be a dict"):
            await r.compute(function=len, key="k", args=(), kwargs=[1])
        with pytest.raises(TypeError, match="needed must be a list"):
            await r.compute(function=len, key="k", args=("x",), needed="x")
        with pytest.raises(TypeError, match="who_has must be a dict"):
            await r.compute(function=len, key="k", needed=["x"], who_has=["x"])
        with pytest.raises(TypeError, match="wrong arguments for op 'compute'"):
            await r.compute(function=len, key="k", bogus=1)
        with pytest.raises(TypeError, match="keys must be a list"):
            await r.get_data(keys="x")
        with pytest.raises(TypeError, match="keys must be a list"):
            await r.get_data()
        with pytest.raises(TypeError, match="data must be a dict"):
            await r.update_data(data=[1, 2])
        with pytest.raises(TypeError, match="keys must be a list"):
            await r.delete_data(keys=7)
        with pytest.raises(KeyError, match="'nope'"):
            await r.get_data(keys=["nope", "also-nope"])
        assert await r.get_data(keys=["nope"], allow_missing=True) == {}
        assert await r.delete_data(keys=["nope"]) == "OK"

        for fn in (threading.Lock, _gen, _Unpicklable):
            reply = await r.compute(function=fn, key="u")
            assert reply["status"] == "error", reply
            exc = reply["exception"].exception
            assert isinstance(exc, TypeError)
            assert "cannot be sent over the network" in str(exc)
            assert "for key 'u'" in str(exc)
            with pytest.raises(TypeError, match="cannot be sent"):
                (await r.get_data(keys=["u"]))["u"].reraise()

        # still healthy
        assert await r.ping() == "pong"
        assert (await r.compute(function=operator.add, key="ok", args=(1, 2)))["status"] == "OK"
        assert await r.get_data(keys=["ok"]) == {"ok": 3}
        assert w.stream.comm is not None


@gen_test()
async def test_terminate_closes_worker_and_unregisters():
    center = Center(heartbeat_interval=0.2, heartbeat_timeout=2)
    await center.listen("tcp://127.0.0.1:0")
    try:
        w = await Worker(center.address, ncores=1).start("tcp://127.0.0.1:0")
        async with rpcs(w.address, center.address) as (r, c):
            await r.update_data(data={"x": 1})
            assert await r.terminate() == "OK"
            await asyncio.wait_for(w.finished(), 5)
            await until(lambda: _equal(c.workers(), {}))
            assert (await c.who_has(keys=["x"])) == {"x": []}
    finally:
        await center.close()


@gen_test()
async def test_start_fails_cleanly_without_center():
    from distributed_core import CommClosedError

    w = Worker("tcp://127.0.0.1:1", connect_timeout=0.3)
    with pytest.raises(CommClosedError, match="127.0.0.1:1"):
        await w.start("tcp://127.0.0.1:0")
    assert w._closing


def test_worker_argument_checks():
    with pytest.raises(ValueError, match="ncores"):
        Worker("tcp://127.0.0.1:8787", ncores=0)
    with pytest.raises(ValueError, match="heartbeat_interval"):
        Worker("tcp://127.0.0.1:8787", heartbeat_interval=-1)
    with pytest.raises(ValueError, match="port"):
        Worker("tcp://127.0.0.1:notaport")


@gen_test()
async def test_tls_and_secret_cluster(tmp_path):
    trustme = pytest.importorskip("trustme")
    from distributed_core import Security

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "node.pem"))
    sec = Security(
        secret="s3cret",
        tls_cert=str(tmp_path / "node.pem"),
        tls_key=str(tmp_path / "node.pem"),
        tls_ca_file=str(tmp_path / "ca.pem"),
    )
    center = Center(security=sec, heartbeat_interval=0.2, heartbeat_timeout=2)
    await center.listen("tls://127.0.0.1:0")
    workers = []
    try:
        for _ in range(2):
            w = Worker(center.address, ncores=1, security=sec)
            await w.start()  # default: the Center's scheme, on the interface routing to it
            assert w.address.startswith("tls://127.0.0.1:")
            workers.append(w)
        a, b = workers
        async with rpc(a.address, security=sec) as ra, rpc(b.address, security=sec) as rb:
            await rb.update_data(data={"y": np.arange(100_000)})
            reply = await ra.compute(function=np.sum, key="s", args=("y",), needed=["y"])
            assert reply["status"] == "OK", reply
            assert await ra.get_data(keys=["s"]) == {"s": 4999950000}
        # without the secret nobody gets in
        async with rpc(a.address, security=Security(tls_ca_file=str(tmp_path / "ca.pem"))) as r:
            with pytest.raises(ConnectionError):
                await r.ping()
    finally:
        for w in workers:
            await w.close()
        await center.close()
