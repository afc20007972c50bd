"""Client memory per pending future, and release costs linear in the keys released.

The 100,000-future figure is in ``benchmarks/client_bench.py --only memory``;
here a few thousand futures with a generous bound (the layout before issue 10
kept about 1,800 bytes per pending future; now about 550), quick (a few s).
"""

from __future__ import annotations

import gc
import time
import tracemalloc

from distributed_client import Executor, LocalCluster
from distributed_client._state import SchedulerState


def inc(x):
    return x + 1


def _poll(cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_pending_future_costs_under_900_bytes_of_client_memory():
    n = 3000
    with LocalCluster(n_workers=0) as cluster:
        with Executor(cluster, no_workers_timeout=None) as e:
            s = e.session
            warm = e.submit(inc, -1)  # connections, caches, the first pickle
            _poll(lambda: len(s.state.tasks) == 1)
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                futures = [e.submit(inc, i) for i in range(n)]
                _poll(lambda: len(s.state.tasks) == n + 1)
                gc.collect()
                after = tracemalloc.get_traced_memory()[0]
            finally:
                tracemalloc.stop()
            per_future = (after - before) / n
            assert all(f.status == "pending" for f in futures[:10]) and warm.status == "pending"
            assert per_future < 900, f"{per_future:.0f} bytes per pending future"


class _NoScan(dict):
    """A dict that may be looked up but not walked: walking it is O(all)."""

    def _fail(self, *args):
        raise AssertionError("walked every entry while releasing some keys")

    __iter__ = items = values = keys = _fail


def test_release_of_some_keys_never_walks_all_tasks_or_workers():
    s = SchedulerState()
    workers = [f"tcp://w{i}:1" for i in range(5)]
    for w in workers:
        s.add_worker(w, 1)
    n = 2000
    s.update_graph({f"k{i}": ("spec", []) for i in range(n)}, wants=[f"k{i}" for i in range(n)])
    s.update_graph({"sum": ("spec", [f"k{i}" for i in range(10)])}, wants=["sum"])
    while True:
        sent = s.assign()
        if not sent:
            break
        for w, k in sent:
            s.task_finished(k, w, nbytes=8)
    s.take_report()
    s.tasks = _NoScan(s.tasks)
    s.workers = _NoScan(s.workers)
    s.release([f"k{i}" for i in range(100)])  # 10 of them are inputs of "sum": kept
    s.release(["sum"])  # now its inputs go too
    report = s.take_report()
    assert len(report.forgotten) == 101
    assert len(report.delete) == 101
    assert len(dict.keys(s.tasks)) == n - 100
