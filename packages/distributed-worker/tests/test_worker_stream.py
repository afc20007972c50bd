"""The report stream against a recording fake Center (a distributed_core.Server)."""

from __future__ import annotations

import asyncio
import operator
import time

from distributed_core import CommClosedError
from distributed_core.testing import gen_test, serve
from distributed_worker import Worker


class FakeCenter:
    """Records every register and stream message; can drop the stream."""

    def __init__(self, heartbeat_interval=10.0):
        self.heartbeat_interval = heartbeat_interval
        self.registrations: list[dict] = []
        self.messages: list[dict] = []
        self.streams = []
        self.handlers = {"register": self.register, "add_keys": self.add_keys}

    async def register(self, comm, stream=False, **msg):
        assert stream
        self.registrations.append(msg)
        self.streams.append(comm)
        await comm.write({"status": "OK", "heartbeat_interval": self.heartbeat_interval})
        try:
            while True:
                self.messages.append(await comm.read())
        except CommClosedError:
            pass

    def add_keys(self, comm, address, keys, nbytes=None):
        self.messages.append({"op": "rpc-add_keys", "keys": keys})
        return "OK"

    def keys_added(self) -> set:
        return {k for m in self.messages if m.get("op") == "add_keys" for k in m["keys"]}

    def count(self, op) -> int:
        return sum(1 for m in self.messages if m.get("op") == op)


async def until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


@gen_test()
async def test_many_small_results_are_batched():
    fake = FakeCenter()
    async with serve(fake.handlers) as server:
        w = Worker(server.address, ncores=2, batch_interval=0.005)
        await w.start("tcp://127.0.0.1:0")
        try:
            n = 3000
            for start in range(0, n, 100):
                await asyncio.gather(
                    *(
                        w.compute(None, function=operator.add, key=i, args=(i, 1))
                        for i in range(start, start + 100)
                    )
                )
            await until(lambda: len(fake.keys_added()) == n)
            assert fake.keys_added() == set(range(n))
            # a few hundred stream messages at most, not one per result
            assert fake.count("add_keys") < n / 10
            assert fake.count("rpc-add_keys") == 0
        finally:
            await w.close()
        await until(lambda: fake.messages[-1] == {"op": "unregister"})


@gen_test()
async def test_large_batch_is_sent_without_waiting_for_the_interval():
    fake = FakeCenter()
    async with serve(fake.handlers) as server:
        w = Worker(server.address, ncores=1, batch_interval=30, batch_size=100)
        await w.start("tcp://127.0.0.1:0")
        try:
            await w.update_data(None, data={i: i for i in range(250)}, report=False)
            w.stream.add({i: 28 for i in range(250)})
            await until(lambda: len(fake.keys_added()) == 250, timeout=2)
            w.stream.add({"straggler": 1})
            await asyncio.sleep(0.2)
            assert "straggler" not in fake.keys_added()  # waits for the interval
        finally:
            await w.close()


@gen_test()
async def test_removals_cancel_pending_additions():
    fake = FakeCenter()
    async with serve(fake.handlers) as server:
        w = Worker(server.address, ncores=1, batch_interval=0.2)
        await w.start("tcp://127.0.0.1:0")
        try:
            await w.update_data(None, data={"a": 1, "b": 2}, report=False)
            w.stream.add({"a": 28, "b": 28})
            w.delete_data(None, keys=["a"])
            await until(lambda: fake.count("add_keys") == 1)
            await asyncio.sleep(0.05)
            assert fake.messages == [
                {"op": "remove_keys", "keys": ["a"]},
                {"op": "add_keys", "keys": ["b"], "nbytes": {"b": 28}},
            ]
        finally:
            await w.close()


@gen_test()
async def test_reconnects_and_reregisters_with_all_keys():
    fake = FakeCenter()
    async with serve(fake.handlers) as server:
        w = Worker(server.address, ncores=1, name="w")
        await w.start("tcp://127.0.0.1:0")
        try:
            first = fake.registrations[0]
            assert first["address"] == w.address
            assert first["ncores"] == 1 and first["name"] == "w"
            assert first["keys"] == [] and first["nbytes"] == {}
            await w.update_data(None, data={"x": b"12345", ("t", 1): 7}, report=False)
            fake.streams[0].abort()
            await until(lambda: len(fake.registrations) == 2)
            second = fake.registrations[1]
            assert second["keys"] == ["x", ("t", 1)]
            assert second["nbytes"]["x"] == 5
            await until(lambda: w.stream.registrations == 2)  # the reply may still be in flight
            # reports keep flowing on the new stream
            await w.compute(None, function=operator.add, key="z", args=(1, 2))
            await until(lambda: "z" in fake.keys_added())
        finally:
            await w.close()


@gen_test()
async def test_update_data_waits_for_registration_while_center_is_away():
    fake = FakeCenter()
    async with serve(fake.handlers) as server:
        address = server.address
        w = Worker(address, ncores=1, connect_timeout=5)
        await w.start("tcp://127.0.0.1:0")
    # the center is gone: update_data(report=True) waits for it to come back
    try:
        pending = asyncio.ensure_future(w.update_data(None, data={"k": 1}))
        await asyncio.sleep(0.3)
        assert not pending.done()
        fake2 = FakeCenter()
        async with serve(fake2.handlers, address=address):
            result = await asyncio.wait_for(pending, 20)  # reconnect backoff on a loaded machine
            assert result["keys"] == ["k"]
            assert "k" in fake2.registrations[-1]["keys"] or "k" in fake2.keys_added()
    finally:
        await w.close()


@gen_test()
async def test_heartbeats_carry_metrics():
    fake = FakeCenter(heartbeat_interval=0.05)
    async with serve(fake.handlers) as server:
        w = Worker(server.address, ncores=1)
        await w.start("tcp://127.0.0.1:0")
        try:
            await w.update_data(None, data={"x": b"abc"}, report=False)
            await until(lambda: fake.count("heartbeat") >= 3, timeout=2)
            beat = [m for m in fake.messages if m["op"] == "heartbeat"][-1]
            assert beat["nkeys"] == 1 and beat["nbytes"] == 3 and beat["memory"] > 0
            assert w.stream.heartbeat_interval == 0.05
        finally:
            await w.close()


@gen_test()
async def test_own_heartbeat_interval_only_lowers_the_centers():
    fake = FakeCenter(heartbeat_interval=1.0)
    async with serve(fake.handlers) as server:
        for ours, expected in ((0.1, 0.1), (5.0, 1.0), (None, 1.0)):
            w = Worker(server.address, ncores=1, heartbeat_interval=ours)
            await w.start("tcp://127.0.0.1:0")
            assert w.stream.heartbeat_interval == expected
            await w.close()


@gen_test()
async def test_refused_registration_is_an_error():
    async def refuse(comm, **msg):
        await comm.write({"status": "error", "message": "go away"})

    async with serve({"register": refuse}) as server:
        w = Worker(server.address, ncores=1)
        try:
            await w.start("tcp://127.0.0.1:0")
        except ConnectionError as e:
            assert "go away" in str(e)
        else:
            raise AssertionError("start() should have failed")
