"""A worker with a 200 MB limit holds 1 GB: the rest is on disk, read back exactly."""

from __future__ import annotations

import gc
import hashlib

import numpy as np
import pytest

from distributed_client import Executor, LocalCluster

LIMIT = 200_000_000
TERMINATE = int(LIMIT * 0.95)
N = 100  # arrays
SIZE = 10_000_000  # bytes each: 1 GB in all


def make(i: int, size: int = SIZE):
    return np.random.default_rng(i).integers(0, 255, size, dtype=np.uint8)


def digest(a) -> str:
    return hashlib.sha256(memoryview(a).cast("B")).hexdigest()


def total_of(*arrays) -> int:
    return int(sum(int(a.sum(dtype=np.int64)) for a in arrays))


def worker_info(ex):
    return list(ex.scheduler_info()["workers"].values())


@pytest.fixture
def one_worker(tmp_path):
    with LocalCluster(
        n_workers=1, ncores=1, nanny=True, memory_limit=LIMIT,
        worker_args=["--local-directory", str(tmp_path)],
    ) as cluster:  # fmt: skip
        yield cluster, tmp_path


def test_one_gigabyte_through_a_200mb_worker(one_worker, sampler, h):
    cluster, spill_dir = one_worker
    nanny = cluster.worker_processes[0].pid
    (worker,) = h.worker_children(nanny)
    rss = sampler([nanny])
    with Executor(cluster) as ex:
        # scatter: 1 GB in 10 MB arrays, each scattered on its own
        digests = {}
        futures = []
        for i in range(N):
            a = make(i)
            digests[i] = digest(a)
            futures.append(ex.scatter([a])[0])
            del a
        assert h.dir_bytes(spill_dir) > (N * SIZE) // 2  # most of it is on disk
        info = worker_info(ex)
        h.wait_for(
            lambda: worker_info(ex)[0]["memory"]["spilled"],
            10, "the heartbeat reports spilled bytes",
        )  # fmt: skip
        info = worker_info(ex)[0]
        assert info["memory"]["limit"] == LIMIT
        assert info["nbytes"] >= N * SIZE  # spilled values count in the center's view
        for j in range(0, N, 5):  # a few at a time: each gather is held in memory
            values = ex.gather(futures[j : j + 5])
            assert [digest(v) for v in values] == [digests[i] for i in range(j, j + 5)]
            del values
        on_disk = h.dir_bytes(spill_dir)
        del futures
        gc.collect()
        h.wait_for(
            lambda: h.dir_bytes(spill_dir) < on_disk // 10, 20, "the spill directory shrinks"
        )
        h.wait_for(
            lambda: worker.memory_info().rss < LIMIT * 0.6,
            20, "the worker's RSS drops below target after delete",
        )  # fmt: skip

        # the same through tasks producing the arrays
        futures = ex.map(make, range(N))
        # one gather of all of it: the client asks in parts of GATHER_BATCH_BYTES
        values = ex.gather(futures)
        assert [digest(v) for v in values] == [digest(make(i)) for i in range(N)]
        del values
        assert h.dir_bytes(spill_dir) > (N * SIZE) // 2
        del futures
        gc.collect()
        h.wait_for(lambda: h.dir_bytes(spill_dir) < SIZE, 20, "the spill directory empties")
    rss.stop()
    assert rss.samples > 10
    assert rss.pids == {worker.pid}, "the worker was restarted"
    assert rss.peak <= TERMINATE, f"RSS peaked at {rss.peak} > terminate {TERMINATE}"


def test_peer_fetch_gather_and_compute_from_disk(tmp_path, sampler, h):
    with LocalCluster(
        n_workers=2, ncores=1, nanny=True, memory_limit=LIMIT,
        worker_args=["--local-directory", str(tmp_path)],
    ) as cluster, Executor(cluster) as ex:  # fmt: skip
        a, b = sorted(cluster.worker_addresses)
        arrays = [make(i) for i in range(30)]  # 300 MB on worker a: most on disk
        futures = [ex.scatter([x], workers=[a])[0] for x in arrays]
        h.wait_for(
            lambda: ex.scheduler_info()["workers"][a]["memory"]["spilled"],
            10, "worker a reports spilled bytes",
        )  # fmt: skip
        # the first ones are the least recently used: on disk
        on_disk = futures[:5]
        expected = total_of(*arrays[:5])
        # a compute whose inputs are all on disk (on the worker holding them)
        assert ex.submit(total_of, *on_disk, workers=[a]).result() == expected
        # peer fetch of spilled values: b computes on a's data
        assert ex.submit(total_of, *futures[5:10], workers=[b]).result() == total_of(*arrays[5:10])
        # gather of spilled values
        values = ex.gather(futures[10:15])
        assert [digest(v) for v in values] == [digest(x) for x in arrays[10:15]]
