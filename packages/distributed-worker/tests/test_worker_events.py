"""Task events on the report stream: sent only to a center that announced
``task_events`` (older centers never see the new op), bounded while pending."""

from __future__ import annotations

import asyncio
import operator
import time

from distributed_core import CommClosedError
from distributed_core.testing import gen_test, serve
from distributed_worker import Worker
from distributed_worker.stream import MAX_PENDING_EVENTS


class RecordingCenter:
    def __init__(self, task_events: bool):
        self.task_events = task_events
        self.messages: list = []
        self.handlers = {"register": self.register}

    async def register(self, comm, stream=False, **msg):
        reply = {"status": "OK", "heartbeat_interval": 10.0}
        if self.task_events:
            reply["task_events"] = 1
        await comm.write(reply)
        try:
            while True:
                self.messages.append(await comm.read())
        except CommClosedError:
            pass

    def events(self) -> list:
        out = []
        for m in self.messages:
            if m.get("op") == "task_events":
                out += m["events"]
            elif m.get("op") == "add_keys":
                out += m.get("tasks", [])
        return out


async def until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def boom():
    raise ValueError("boom")


@gen_test()
async def test_task_events_sent_to_a_center_that_takes_them():
    fake = RecordingCenter(task_events=True)
    async with serve(fake.handlers) as server:
        w = Worker(server.address, ncores=2)
        await w.start("tcp://127.0.0.1:0")
        try:
            assert w.stream.task_events
            before = time.time()
            for i in range(10):
                await w.compute(None, function=operator.add, key=f"add-{i}", args=(i, 1))
            await w.compute(None, function=boom, key="boom-1")
            await until(lambda: len(fake.events()) == 11)
            events = fake.events()
            key, start, stop, thread, status, nbytes = events[0]
            assert key == "add-0" and status == "OK" and nbytes > 0
            assert before <= start <= stop <= time.time()
            assert thread.startswith("dworker-compute")
            assert events[-1][0] == "boom-1" and events[-1][4] == "error"
            assert w._metrics()["executing"] == 0
        finally:
            await w.close()


@gen_test()
async def test_no_task_events_to_an_older_center():
    fake = RecordingCenter(task_events=False)
    async with serve(fake.handlers) as server:
        w = Worker(server.address, ncores=1)
        await w.start("tcp://127.0.0.1:0")
        try:
            assert not w.stream.task_events
            for i in range(5):
                await w.compute(None, function=operator.add, key=i, args=(i, 1))
            await until(lambda: sum(m.get("op") == "add_keys" for m in fake.messages) >= 1)
            await w.stream.flush()
            assert fake.events() == [] and w.stream.events == []
            assert not any("tasks" in m for m in fake.messages)
            assert all(m.get("op") in ("add_keys", "remove_keys", "heartbeat")
                       for m in fake.messages)  # fmt: skip
        finally:
            await w.close()


@gen_test()
async def test_pending_events_are_bounded():
    fake = RecordingCenter(task_events=True)
    async with serve(fake.handlers) as server:
        w = Worker(server.address, ncores=1)
        await w.start("tcp://127.0.0.1:0")
        try:
            w.stream.comm, comm = None, w.stream.comm  # "disconnected": nothing is sent
            for i in range(MAX_PENDING_EVENTS + 5):
                w.stream.task_done([i, 0.0, 0.0, "t", "OK", 0])
            assert len(w.stream.events) == MAX_PENDING_EVENTS
            assert w.stream.events_dropped == 5
            w.stream.comm = comm
        finally:
            await w.close()
