"""Pause above the pause fraction, resume below it; unmanaged leaks spill, then restart."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from distributed_client import Executor, LocalCluster, LostDataError


def hold_until(path: str, nbytes: int) -> int:
    """Allocate `nbytes` (touched) and keep them until `path` exists (in a thread)."""
    buffer = np.ones(nbytes, dtype=np.uint8)

    def wait():
        while not os.path.exists(path):
            time.sleep(0.02)
        buffer.resize(0, refcheck=False)

    threading.Thread(target=wait, daemon=True).start()
    return nbytes


def leak(nbytes: int) -> int:
    """Keep `nbytes` for good: unmanaged memory the worker cannot spill.

    (In a module of the worker process: this function arrives pickled by
    value, so a global of this module would be collected with it.)"""
    import sys

    sys.modules[__name__ if __name__ in sys.modules else "sys"].__dict__.setdefault(
        "_leaked_by_test", []
    ).append(np.ones(nbytes, dtype=np.uint8))
    return nbytes


def inc(x):
    return x + 1


def info(ex):
    (w,) = ex.scheduler_info()["workers"].values()
    return w


def reported(ex, h):
    """The worker's report once its first heartbeat with memory arrived."""
    return h.wait_for(
        lambda: (w := info(ex))["memory"]["rss"] is not None and w, 10, "a memory report"
    )


def test_pause_then_resume_with_exact_results(tmp_path, h):
    limit = 400_000_000  # pause at 320 MB, terminate at 380 MB
    flag = str(tmp_path / "release")
    with LocalCluster(
        n_workers=1, ncores=2, nanny=True, memory_limit=limit, heartbeat_interval=0.2,
    ) as cluster, Executor(cluster) as ex:  # fmt: skip
        before = reported(ex, h)
        baseline = before["memory"]["rss"]
        assert before["paused"] is False
        ex.submit(hold_until, flag, int(limit * 0.85) - baseline, pure=False).result()
        h.wait_for(lambda: info(ex)["paused"], 10, "the worker pauses")
        futures = ex.map(inc, range(50))
        scattered: dict = {}
        thread = threading.Thread(target=lambda: scattered.update(x=ex.scatter([41])[0]))
        thread.start()  # refused while paused: the client retries with backoff
        # paused: no task starts, the scatter waits
        assert info(ex)["paused"]
        assert not any(f.done() for f in futures)
        assert thread.is_alive()
        open(flag, "w").close()  # the memory is released
        assert ex.gather(futures) == list(range(1, 51))
        thread.join(30)
        assert ex.gather(scattered["x"]) == 41
        h.wait_for(lambda: info(ex)["paused"] is False, 10, "the worker reports it resumed")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_unmanaged_leak_spills_then_nanny_restarts(tmp_path, h):
    limit = 300_000_000  # target 180 MB, spill 210 MB, terminate 285 MB
    with LocalCluster(
        n_workers=1, ncores=1, nanny=True, memory_limit=limit, heartbeat_interval=0.2,
        worker_args=["--memory-pause-fraction", "False"],
    ) as cluster, Executor(cluster) as ex:  # fmt: skip
        nanny = cluster.worker_processes[0].pid
        (worker,) = h.worker_children(nanny)
        data = [np.full(5_000_000, i, dtype=np.uint8) for i in range(10)]  # 50 MB
        futures = ex.scatter(data)
        assert reported(ex, h)["memory"]["spilled"] == 0
        baseline = info(ex)["memory"]["rss"]
        # leak past the spill fraction: the managed values go to disk
        ex.submit(leak, int(limit * 0.75) - baseline, pure=False).result()
        h.wait_for(lambda: info(ex)["memory"]["spilled"] > 0, 10, "values spill")
        assert [int(a[0]) for a in ex.gather(futures)] == list(range(10))
        # leak past terminate: the nanny restarts the worker (0.45: the spilled
        # 50 MB left the worker's memory, so 0.3 would no longer reach 0.95)
        fatal = ex.submit(leak, int(limit * 0.45), pure=False)  # noqa: F841 (kept: runs)
        h.wait_for(
            lambda: [p.pid for p in h.worker_children(nanny)] not in ([], [worker.pid]),
            20, "the nanny starts a new worker",
        )  # fmt: skip
        h.wait_for(
            lambda: len(ex.scheduler_info()["workers"]) == 1
            and (info(ex)["memory"]["rss"] or 0) < baseline * 2,
            20, "the new worker registers",
        )  # fmt: skip
        # the cluster carries on; what it still can produce is exact
        assert ex.gather(ex.map(inc, range(20))) == list(range(1, 21))
        with pytest.raises(LostDataError):
            ex.gather(futures[0])
