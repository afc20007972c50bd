"""Worker report streams and liveness: closed streams, silence, restarts."""

from __future__ import annotations

import asyncio

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
            assert reply == {"status": "OK", "heartbeat_interval": 0.2, "center_heartbeats": 0.2}
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
async def test_stream_close_drops_worker_at_once(
    running_center, fake_worker, fake_clock, wait_until
):
    # the injected clock never moves: only the closed stream can drop the worker
    async with (
        running_center(heartbeat_interval=1, heartbeat_timeout=5, clock=fake_clock) as center,
        rpc(center.address) as r,
    ):
        w1 = fake_worker(center.address, A)
        w2 = fake_worker(center.address, B)
        await w1.register(keys=["x", "only-a"])
        await w2.register(keys=["x"])
        w1.close()
        await wait_until(lambda: A not in center.state.workers_map)
        assert await r.who_has(keys=["x", "only-a"]) == {"x": [B], "only-a": []}
        assert A not in await r.ncores()
        assert await r.heartbeat(address=A) == "unknown-worker"
        w2.close()
        await wait_until(lambda: center.state.n_workers == 0)


@gen_test()
async def test_silent_worker_dropped_after_heartbeat_timeout(
    running_center, fake_worker, fake_clock, wait_until
):
    # policy on an injected clock: no wall-clock windows
    async with (
        running_center(heartbeat_interval=1, heartbeat_timeout=5, clock=fake_clock) as center,
        rpc(center.address) as r,
    ):
        silent = fake_worker(center.address, A)
        alive = fake_worker(center.address, B)
        await alive.register(keys=["y"])
        await silent.register(keys=["x", "y"])
        for _ in range(5):
            fake_clock.now += 1
            await alive.heartbeat(beat=fake_clock.now)
            await wait_until(
                lambda: center.state.workers_map[B].metrics.get("beat") == fake_clock.now
            )
            center.check_liveness()
            assert A in center.state.workers_map  # silent for 5 s: not yet more than 5
        fake_clock.now += 0.5
        center.check_liveness()
        assert A not in center.state.workers_map
        assert B in center.state.workers_map  # heartbeats kept it
        assert await r.who_has(keys=["x", "y"]) == {"x": [], "y": [B]}
        # the center hung up on the silent worker
        await silent.wait_closed()
        alive.close()


@gen_test()
async def test_any_message_counts_as_a_heartbeat(
    running_center, fake_worker, fake_clock, wait_until
):
    async with running_center(heartbeat_interval=1, heartbeat_timeout=5, clock=fake_clock) as c:
        async with fake_worker(c.address, A) as w:
            await w.register()
            for i in range(10):
                fake_clock.now += 1
                await w.add_keys([i])
                await wait_until(lambda i=i: i in c.state.who_has_map)
                c.check_liveness()
            assert A in c.state.workers_map


@gen_test()
async def test_center_heartbeats_on_every_report_stream(
    running_center, fake_worker, fake_clock, wait_until
):
    async with running_center(heartbeat_interval=1, heartbeat_timeout=5, clock=fake_clock) as c:
        w1 = fake_worker(c.address, A)
        w2 = fake_worker(c.address, B)
        assert (await w1.register())["center_heartbeats"] == 1
        fake_clock.now += 0.5
        await w2.register()
        assert c.check_liveness() == ([], [])
        fake_clock.now += 0.5
        assert c.check_liveness() == ([], [A])
        assert await asyncio.wait_for(w1.comm.read(), 5) == {"op": "heartbeat"}
        fake_clock.now += 0.5
        assert c.check_liveness() == ([], [B])
        assert await asyncio.wait_for(w2.comm.read(), 5) == {"op": "heartbeat"}
        # a worker registered by rpc (no stream) gets none, and is not an error
        async with rpc(c.address) as r:
            await r.register(address="tcp://127.0.0.1:1003")
        fake_clock.now += 1
        dropped, beaten = c.check_liveness()
        assert dropped == [] and sorted(beaten) == [A, B]
        w1.close()
        w2.close()


@gen_test()
async def test_a_paused_center_does_not_drop_everyone(
    running_center, fake_worker, fake_clock, wait_until
):
    async with running_center(heartbeat_interval=1, heartbeat_timeout=5, clock=fake_clock) as c:
        async with fake_worker(c.address, A) as w:
            await w.register(keys=["x"])
            c.check_liveness()
            fake_clock.now += 30  # SIGSTOP: no check ran, the worker's beats sit unread
            dropped, _ = c.check_liveness()
            assert dropped == [] and A in c.state.workers_map
            # silence after the pause still counts
            for _ in range(6):
                fake_clock.now += 1
                c.check_liveness()
            assert A not in c.state.workers_map
            await w.wait_closed()


class StuckComm:
    """A report stream whose writes never complete (a vanished host, buffer full)."""

    def __init__(self):
        self.aborted = asyncio.Event()

    async def write(self, msg):
        await asyncio.Event().wait()

    def abort(self):
        self.aborted.set()


@gen_test()
async def test_a_blocked_report_stream_does_not_stall_the_center(
    running_center, fake_worker, fake_clock, wait_until
):
    async with running_center(
        heartbeat_interval=0.05, heartbeat_timeout=0.3, clock=fake_clock
    ) as c:
        stuck = StuckComm()
        c.state.register(A)
        c.streams[A] = stuck
        async with fake_worker(c.address, B) as w:
            await w.register()
            fake_clock.now += 0.05
            assert sorted(c.check_liveness()[1]) == [A, B]
            # the healthy stream got its beat while the other write hangs
            assert await asyncio.wait_for(w.comm.read(), 5) == {"op": "heartbeat"}
            fake_clock.now += 0.05
            assert c.check_liveness()[1] == [B]  # one pending beat per stream, no pile-up
            # the hung write is bounded by heartbeat_timeout (real time)
            await asyncio.wait_for(stuck.aborted.wait(), 5)


@gen_test()
async def test_stream_unregister(running_center, fake_worker, wait_until):
    async with running_center() as center:
        async with fake_worker(center.address, A) as w:
            await w.register(keys=["x"])
            await w.unregister()
            await wait_until(lambda: center.state.n_workers == 0)
            assert center.state.who_has(["x"]) == {"x": []}
            await w.wait_closed()


@gen_test()
async def test_new_stream_replaces_old_one(running_center, fake_worker, wait_until):
    async with running_center() as center, rpc(center.address) as r:
        old = fake_worker(center.address, A)
        await old.register(keys=["x", "y"])
        new = fake_worker(center.address, A)
        await new.register(keys=["y", "z"])
        # the old stream is closed by the center ...
        await old.wait_closed()
        old.close()
        await wait_until(lambda: len(center.comms) == 1)  # the old handler has finished
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
    await w.wait_closed()
    w.close()
    async with running_center(address) as second, rpc(address) as r:
        assert await r.who_has(keys=["k0"]) == {"k0": []}
        w = fake_worker(address, A)  # what a worker does when its stream closes
        await w.register(keys=keys, nbytes={"k0": 10})
        assert set(await r.who_has()) == set(keys)
        assert await r.nbytes() == {"k0": 10}
        assert second.state.n_workers == 1
        w.close()
