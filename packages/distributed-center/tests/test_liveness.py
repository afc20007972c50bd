"""Worker report streams and liveness: closed streams, silence, restarts."""

from __future__ import annotations

import asyncio
import time

import pytest

from distributed_core import CommClosedError, rpc
from distributed_core.testing import gen_test

A = "tcp://127.0.0.1:1001"
B = "tcp://127.0.0.1:1002"


@gen_test()
async def test_stream_register_add_remove(running_center, fake_worker, wait_until):
    async with running_center() as center, rpc(center.address) as r:
        async with fake_worker(center.address, A) as w:
            reply = await w.register(keys=["a", ("t", 1)], ncores=2, name="w1", nbytes={"a": 7})
            assert reply == {"status": "OK", "heartbeat_interval": 0.2}
            assert await r.who_has(keys=["a", ("t", 1)]) == {"a": [A], ("t", 1): [A]}
            assert (await r.workers())[A]["name"] == "w1"

            await w.add_keys(["b", b"c"], nbytes={"b": 100})
            await wait_until(lambda: center.state.n_keys == 4)
            assert await r.nbytes() == {"a": 7, "b": 100}
            assert (await r.workers())[A]["nbytes"] == 107

            await w.remove_keys(["a", "never-had"])
            await wait_until(lambda: center.state.n_keys == 3)
            assert await r.who_has(keys=["a"]) == {"a": []}

            await w.heartbeat(memory=42)
            await wait_until(lambda: center.state.workers_map[A].metrics == {"memory": 42})


@gen_test()
async def test_stream_close_drops_worker_at_once(running_center, fake_worker, wait_until):
    # a long heartbeat timeout proves that the drop comes from the closed stream
    async with (
        running_center(heartbeat_interval=1, heartbeat_timeout=30) as center,
        rpc(center.address) as r,
    ):
        w1 = fake_worker(center.address, A)
        w2 = fake_worker(center.address, B)
        await w1.register(keys=["x", "only-a"])
        await w2.register(keys=["x"])
        w1.close()
        took = await wait_until(lambda: A not in center.state.workers_map, timeout=2)
        assert took < 1
        assert await r.who_has(keys=["x", "only-a"]) == {"x": [B], "only-a": []}
        assert A not in await r.ncores()
        assert await r.heartbeat(address=A) == "unknown-worker"
        w2.close()
        await wait_until(lambda: center.state.n_workers == 0, timeout=2)


@gen_test()
async def test_silent_worker_dropped_within_heartbeat_timeout(
    running_center, fake_worker, wait_until
):
    async with (
        running_center(heartbeat_interval=0.2, heartbeat_timeout=1.0) as center,
        rpc(center.address) as r,
    ):
        silent = fake_worker(center.address, A)
        alive = fake_worker(center.address, B)
        await alive.register(keys=["y"])
        start = time.monotonic()
        await silent.register(keys=["x", "y"])

        async def beat():
            while True:
                await asyncio.sleep(0.2)
                await alive.heartbeat()

        beating = asyncio.ensure_future(beat())
        try:
            await wait_until(lambda: A not in center.state.workers_map, timeout=3)
            took = time.monotonic() - start
            # dropped after the 1 s timeout, plus at most one watchdog period
            # (interval / 4) and some slack for a loaded CI machine
            assert 0.95 <= took <= 2.0, took
            assert await r.who_has(keys=["x", "y"]) == {"x": [], "y": [B]}
            # the center hung up on the silent worker
            with pytest.raises(CommClosedError):
                await asyncio.wait_for(silent.comm.read(), 2)
            await asyncio.sleep(0.5)
            assert B in center.state.workers_map  # heartbeats keep it alive
        finally:
            beating.cancel()
            silent.close()
            alive.close()


@gen_test()
async def test_any_message_counts_as_a_heartbeat(running_center, fake_worker):
    async with running_center(heartbeat_interval=0.1, heartbeat_timeout=0.5) as center:
        async with fake_worker(center.address, A) as w:
            await w.register()
            for i in range(10):
                await asyncio.sleep(0.1)
                await w.add_keys([i])
            assert A in center.state.workers_map


@gen_test()
async def test_stream_unregister(running_center, fake_worker, wait_until):
    async with running_center() as center:
        async with fake_worker(center.address, A) as w:
            await w.register(keys=["x"])
            await w.unregister()
            await wait_until(lambda: center.state.n_workers == 0)
            assert center.state.who_has(["x"]) == {"x": []}
            with pytest.raises(CommClosedError):
                await asyncio.wait_for(w.comm.read(), 2)


@gen_test()
async def test_new_stream_replaces_old_one(running_center, fake_worker, wait_until):
    async with running_center() as center, rpc(center.address) as r:
        old = fake_worker(center.address, A)
        await old.register(keys=["x", "y"])
        new = fake_worker(center.address, A)
        await new.register(keys=["y", "z"])
        # the old stream is closed by the center ...
        with pytest.raises(CommClosedError):
            await asyncio.wait_for(old.comm.read(), 2)
        old.close()
        await asyncio.sleep(0.1)
        # ... and its closing does not drop the new registration
        assert sorted((await r.has_what())[A]) == ["y", "z"]
        await new.add_keys(["w"])
        await wait_until(lambda: "w" in center.state.who_has_map)
        new.close()
        await wait_until(lambda: center.state.n_workers == 0)


@gen_test()
async def test_bad_stream_messages_are_ignored(running_center, fake_worker, wait_until):
    async with running_center() as center:
        async with fake_worker(center.address, A) as w:
            await w.register(keys=["x"])
            await w.send(["not", "a", "map"])
            await w.send({"op": "no-such-op"})
            await w.send({"op": "add_keys", "keys": "not-a-list"})
            await w.send({"op": "add_keys", "keys": [["unhashable"]]})
            await w.send({"op": "remove_keys", "keys": 5})
            await w.add_keys(["y"])
            await wait_until(lambda: center.state.n_keys == 2)
            assert sorted(center.state.has_what()[A]) == ["x", "y"]


@gen_test()
async def test_bad_stream_registration_gets_an_error_reply(running_center, fake_worker):
    async with running_center() as center:
        async with fake_worker(center.address, A) as w:
            reply = await w.register(keys="not-a-list")
            assert reply["status"] == "error"
            assert "wrap a single key in a list" in reply["message"]
            with pytest.raises(CommClosedError):
                await asyncio.wait_for(w.comm.read(), 2)
        assert center.state.n_workers == 0


@gen_test()
async def test_center_restart_accepts_reregistration(running_center, fake_worker):
    keys = [f"k{i}" for i in range(50)] + [("t", 1)]
    async with running_center() as first:
        address = first.address
        w = fake_worker(address, A)
        await w.register(keys=keys, nbytes={"k0": 10})
    # the center went away: the stream is closed
    with pytest.raises(CommClosedError):
        await asyncio.wait_for(w.comm.read(), 2)
    w.close()
    async with running_center(address) as second, rpc(address) as r:
        assert await r.who_has(keys=["k0"]) == {"k0": []}
        w = fake_worker(address, A)  # what a worker does when its stream closes
        await w.register(keys=keys, nbytes={"k0": 10})
        assert set(await r.who_has()) == set(keys)
        assert await r.nbytes() == {"k0": 10}
        assert second.state.n_workers == 1
        w.close()
