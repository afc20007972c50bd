"""The center's event buffers under 100,000 tasks: its memory stays bounded.

A real ``dcenter`` process with a 10,000-event task stream receives the task
events of 100,000 tasks on a worker's report stream (a real socket, the
worker side of the protocol spoken by this test so that the run takes seconds
rather than minutes: the events are what a worker sends, 1,000 per batch, in
the ``tasks`` field of ``add_keys`` and in ``task_events`` messages). Its
resident memory once the ring is full (20,000 tasks) and after 100,000 must
differ by far less than 80,000 more kept events would take (~28 MB).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import urllib.request

import psutil

from distributed_core import connect

RING = 10_000
ADDRESS = "tcp://127.0.0.1:1"  # the name the fake worker registers under


def batch(start, n=1000):
    now = time.time()
    return [[f"inc-{i:032x}", now, now + 0.001, "dworker-compute_0", "OK", 28]
            for i in range(start, start + n)]  # fmt: skip


async def send_tasks(center, first, count):
    """Task events on a report stream; returns once the center has read them all."""
    comm = await connect(center, name="test-worker-stream")
    await comm.write({"op": "register", "reply": False, "stream": True, "address": ADDRESS,
                      "keys": [], "ncores": 1, "name": "fake", "nbytes": {}})  # fmt: skip
    reply = await asyncio.wait_for(comm.read(), 10)
    assert reply.get("task_events") == 1, reply
    for start in range(first, first + count, 1000):
        if start % 2000:
            await comm.write({"op": "task_events", "events": batch(start)})
        else:
            await comm.write({"op": "add_keys", "keys": [], "tasks": batch(start)})
    await comm.write({"op": "unregister"})  # read after every batch above
    deadline = time.monotonic() + 30
    while True:  # the center closes the stream once it read 'unregister'
        try:
            await asyncio.wait_for(comm.read(), max(deadline - time.monotonic(), 0.01))
        except Exception:  # noqa: BLE001 - closed (or the deadline): done
            break
    comm.abort()


def api(url, path):
    """GET `path` of the dashboard whose link dcenter printed as `url`.

    With the default secret (secure by default) that link carries
    ``?token=...``; the API takes the token as a Bearer header.
    """
    base, _, query = url.partition("?")
    token = urllib.parse.parse_qs(query).get("token", [""])[0]
    request = urllib.request.Request(base + path)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.load(r)


def completed(url):
    return api(url, "api/v1/workers")["center"]["tasks_completed"]


def test_center_memory_bounded_under_100000_tasks(cluster):
    address, url, _ = cluster(0, env={"DISTRIBUTED_DASHBOARD__TASK_EVENTS": str(RING)})
    center = psutil.Process(cluster.procs[0].p.pid)
    asyncio.run(send_tasks(address, 0, 20_000))
    assert completed(url) == 20_000
    full = center.memory_info().rss
    asyncio.run(send_tasks(address, 20_000, 80_000))
    assert completed(url) == 100_000
    after = center.memory_info().rss
    tasks = api(url, "api/v1/task-stream?since=0&limit=50000")["tasks"]
    assert len(tasks) == RING and tasks[-1][4] == f"inc-{99_999:032x}"
    growth = after - full
    print(f"center RSS after 20,000 tasks {full / 2**20:.1f} MiB, after 100,000 "
          f"{after / 2**20:.1f} MiB (growth {growth / 2**20:.1f} MiB)")  # fmt: skip
    # 80,000 more events kept would be ~28 MB (350 bytes each): far from it
    assert growth < 8 * 2**20, (full, after)
