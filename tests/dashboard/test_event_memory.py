"""The center's event buffers under 100,000 real tasks: its memory stays bounded.

A center with a 10,000-event task stream runs 100,000 trivial tasks in ten
maps of 10,000 (each map's results released before the next, so the keys do
not pile up). Its resident memory once the ring is full (after 2 maps) and
after all 10 maps must differ by far less than 90,000 more events would take.
"""

from __future__ import annotations

import json
import urllib.request

import psutil

from distributed_client import Executor

RING = 10_000


def test_center_memory_bounded_under_100000_tasks(cluster):
    address, url, workers = cluster(2, env={"DISTRIBUTED_DASHBOARD__TASK_EVENTS": str(RING)})
    center = psutil.Process(cluster.procs[0].p.pid)
    rss = {}
    with Executor(address) as ex:
        for i in range(10):
            futures = ex.map(abs, range(i * 10_000, (i + 1) * 10_000))
            assert sum(f.result() for f in futures) == sum(range(i * 10_000, (i + 1) * 10_000))
            del futures
            rss[i + 1] = center.memory_info().rss
    with urllib.request.urlopen(url + "api/v1/workers", timeout=10) as r:
        data = json.load(r)
    assert data["center"]["tasks_completed"] == 100_000
    with urllib.request.urlopen(url + "api/v1/task-stream?since=0&limit=50000", timeout=10) as r:
        assert len(json.load(r)["tasks"]) == RING
    growth = rss[10] - rss[2]
    print(f"center RSS after 20,000 tasks {rss[2] / 2**20:.1f} MiB, after 100,000 "
          f"{rss[10] / 2**20:.1f} MiB (growth {growth / 2**20:.1f} MiB)")  # fmt: skip
    # 90,000 more events kept would be ~30 MB (350 bytes each): far from it
    assert growth < 12 * 2**20, rss
