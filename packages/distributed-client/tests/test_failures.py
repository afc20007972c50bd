"""Workers killed with SIGKILL in the middle of work: results stay exact."""

from __future__ import annotations

import os
import threading
import time
from functools import partial
from operator import add

import pytest

from distributed_client import (
    Executor,
    KilledWorker,
    LocalCluster,
    LostDataError,
    Pool,
    get,
    scatter,
)


def slow_inc(x, delay=0.05):
    time.sleep(delay)
    return x + 1


def slow_add(x, y, delay=0.01):
    time.sleep(delay)
    return x + y


def make_cluster(n):
    return LocalCluster(n_workers=n, ncores=1, heartbeat_interval=0.2, heartbeat_timeout=2)


def kill_later(cluster, delay, i=0, when_done=None):
    """Kill worker `i` after `delay` seconds (in a thread); returns the thread."""
    info = {}

    def run():
        time.sleep(delay)
        info["done_before"] = when_done() if when_done else None
        info["address"] = cluster.kill_worker(i)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.info = info
    return t


def test_pool_map_survives_a_killed_worker():
    with make_cluster(2) as cluster, Pool(cluster.center_address) as pool:
        killer = kill_later(cluster, 0.25)
        results = pool.map(slow_inc, range(20))
        killer.join()
        assert killer.info["address"]
        assert results == list(range(1, 21))


def test_get_chains_survive_a_killed_worker():
    dsk = {}
    for c in range(4):
        dsk[("x", c, 0)] = c * 100
        for i in range(1, 10):
            dsk[("x", c, i)] = (partial(slow_inc, delay=0.03), ("x", c, i - 1))
    keys = [("x", c, 9) for c in range(4)]
    with make_cluster(2) as cluster:
        killer = kill_later(cluster, 0.3)
        assert get(cluster.center_address, dsk, keys) == [c * 100 + 9 for c in range(4)]
        killer.join()
        assert killer.info["address"]


def test_executor_tree_reduction_survives_two_killed_workers():
    with make_cluster(3) as cluster, Executor(cluster.center_address) as e:
        level = e.map(partial(slow_inc, delay=0.01), range(256))
        leaves = list(level)
        while len(level) > 1:
            level = [e.submit(slow_add, level[i], level[i + 1]) for i in range(0, len(level), 2)]
        [final] = level

        def progress():
            return sum(f.done() for f in leaves)

        first = kill_later(cluster, 0.4, 0, progress)
        first.join()
        second = kill_later(cluster, 0.4, 0, progress)
        second.join()
        assert not final.done(), "the run finished before the second kill; make tasks slower"
        assert final.result(timeout=60) == sum(range(1, 257))
        assert len(cluster.worker_addresses) == 1


def die():
    os._exit(1)


def test_task_that_kills_its_worker_fails_with_killed_worker():
    with make_cluster(3) as cluster, Executor(cluster.center_address) as e:
        ok = e.submit(slow_inc, 1)
        assert ok.result() == 2
        bad = e.submit(die)
        with pytest.raises(KilledWorker, match="died 3 times") as info:
            bad.result(timeout=60)
        assert bad.key in str(info.value)
        assert bad.status == "error"


def test_lost_scattered_data_names_the_keys():
    with make_cluster(2) as cluster:
        center = cluster.center_address
        single = scatter(center, {"only-copy": 1})
        double = scatter(center, {"two-copies": 2}, replicas=2)
        holder = single["only-copy"]._session.state.who_has(["only-copy"])["only-copy"][0]
        cluster.kill_worker(cluster.worker_addresses.index(holder))
        t = time.time()
        with pytest.raises(LostDataError, match="only-copy"):
            single["only-copy"].get()
        assert time.time() - t < 10
        assert double["two-copies"].get() == 2


def test_dependents_of_lost_scattered_data_fail():
    with make_cluster(2) as cluster, Executor(cluster.center_address) as e:
        [x] = e.scatter([10])
        y = e.submit(slow_add, x, 1, delay=0.5)
        holder = e.session.state.who_has([x.key])[x.key][0]
        time.sleep(0.1)
        cluster.kill_worker(cluster.worker_addresses.index(holder))
        with pytest.raises(LostDataError, match=x.key):
            y.result(timeout=30)
        assert e.submit(add, 1, 2).result(timeout=30) == 3  # still works


def test_new_worker_is_used():
    with make_cluster(1) as cluster, Executor(cluster.center_address) as e:
        assert e.submit(add, 1, 1).result() == 2
        new = cluster.add_worker()
        f = e.submit(add, 2, 2, workers=[new])
        assert f.result(timeout=30) == 4
