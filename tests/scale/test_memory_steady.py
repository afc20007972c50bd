"""Released batches leave nothing behind: RSS does not grow batch after batch (issue 10).

RSS of the client, the center and each worker is read (psutil) after a batch
of 100,000 tasks has been computed, gathered and released (and
``gc.collect()`` in the client), and again after a second and a third. After
the third each process must be within 15% (plus 16 MiB) of its level after
the first: what one batch leaked, the next two would add again (a leak of
200 bytes a task shows as +40 MiB). The margin covers the level's own
wobble between batches (client: 150-162 MiB over five batches).

What this does NOT show, and the issue asked for: RSS going back to its level
*before* the first batch. It does not, on CPython 3.11 (measured: client
37 -> 157 MiB, the same after the 2nd and 3rd batches; ``malloc_trim(0)``
gives nothing back): the freed objects' memory stays in the interpreter's
allocator arenas, which are returned only when entirely empty, and is reused
by the next batch. No timing asserts.
"""

from __future__ import annotations

import gc
import os
import time
from operator import neg

import psutil

from distributed_client import Executor

N = 100_000
SLACK = 16 * 2**20


def poll(condition, timeout, what):
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)


def rss(pids) -> dict:
    return {name: psutil.Process(pid).memory_info().rss for name, pid in pids.items()}


def batch(e: Executor, n: int, offset: int) -> None:
    fs = e.map(neg, range(offset, offset + n))
    assert e.gather(fs)[-1] == -(offset + n - 1)
    keys = [f.key for f in fs[:: max(1, n // 100)]]
    del fs
    gc.collect()
    poll(lambda: not e._call_in_loop(lambda: len(e.session.state.tasks)), 120, "released")
    poll(lambda: not set(keys) & set(e.who_has()), 60, "deleted on the cluster")
    gc.collect()


def test_memory_returns_after_release(cluster):
    pids = {"client": os.getpid(), "center": cluster.center_process.pid}
    for i, p in enumerate(cluster.worker_processes):
        pids[f"worker-{i}"] = p.pid
    with Executor(cluster) as e:
        batch(e, N, 10_000_000)
        before = rss(pids)
        batch(e, N, 20_000_000)
        batch(e, N, 30_000_000)
        after = rss(pids)
    over = {
        name: f"{before[name] / 2**20:.0f} MiB -> {after[name] / 2**20:.0f} MiB"
        for name in pids
        if after[name] > before[name] * 1.15 + SLACK
    }
    assert not over, f"memory grew over two more released batches of {N:,} tasks: {over}"
