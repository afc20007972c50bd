"""Nannies restart dead workers; nothing a LocalCluster started outlives it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest

from distributed_client import Executor, KilledWorker, LocalCluster, Pool


def slow_square(x):
    time.sleep(0.02)
    return x * x


def die(x):
    os._exit(1)


def inc(x):
    return x + 1


def _alive(process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def addresses(ex):
    return set(ex.scheduler_info()["workers"])


def test_kill_9_worker_under_nanny_is_replaced_and_map_completes(h):
    with LocalCluster(n_workers=2, ncores=1, nanny=True) as cluster:
        nanny = cluster.worker_processes[0].pid
        (worker,) = h.worker_children(nanny)
        with Pool(cluster) as pool, Executor(cluster) as ex:
            before = set(cluster.worker_addresses)
            out: dict = {}

            def run():
                try:
                    out["result"] = pool.map(slow_square, range(300))
                except BaseException as e:  # reported below
                    out["error"] = e

            thread = threading.Thread(target=run)
            thread.start()
            h.wait_for(
                lambda: sum(w["nkeys"] or 0 for w in ex.scheduler_info()["workers"].values()),
                10, "the map is running: results are coming in",
            )  # fmt: skip
            os.kill(worker.pid, signal.SIGKILL)
            start = time.monotonic()

            def replaced():
                """The nanny's new (live) worker, once the center lists it."""
                kids = [c for c in h.worker_children(nanny) if c.pid != worker.pid and _alive(c)]
                return (
                    kids if kids and len(addresses(ex)) == 2 and addresses(ex) != before else None
                )

            (new,) = h.wait_for(replaced, 5, "a new worker registers")
            assert time.monotonic() - start < 5
            assert new.pid != worker.pid
            thread.join(60)
            assert not thread.is_alive()
            assert "error" not in out, out
            assert out["result"] == [x * x for x in range(300)]


def test_os_exit_task_raises_killed_worker_and_the_cluster_recovers(h):
    with LocalCluster(n_workers=2, ncores=1, nanny=True) as cluster:
        with Executor(cluster, allowed_failures=2) as ex:
            future = ex.submit(die, 1)
            with pytest.raises(KilledWorker) as info:
                future.result(timeout=60)
            assert info.value.key == future.key
            assert len(info.value.workers) >= 2
            h.wait_for(lambda: len(addresses(ex)) == 2, 10, "two workers again")
            assert ex.gather(ex.map(inc, range(100))) == list(range(1, 101))


PARENT = textwrap.dedent(
    """
    import os, sys, time, psutil
    from distributed_client import LocalCluster
    cluster = LocalCluster(n_workers=2, ncores=1, nanny=True)
    me = psutil.Process()
    pids = [p.pid for p in me.children(recursive=True)]
    print(" ".join(map(str, pids)), flush=True)
    time.sleep(600)
    """
)


def test_localcluster_children_exit_when_their_parent_is_killed(h):
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        line = parent.stdout.readline()
        pids = [int(p) for p in line.split()]
        assert len(pids) >= 5, line  # center, 2 nannies, 2 workers
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()

        def all_gone():
            alive = []
            for pid in pids:
                try:
                    p = psutil.Process(pid)
                    if p.status() != psutil.STATUS_ZOMBIE:
                        alive.append(pid)
                except psutil.NoSuchProcess:
                    pass
            return not alive

        try:
            h.wait_for(all_gone, 10, "every process the LocalCluster started exits")
        except AssertionError:
            left = [
                p
                for p in psutil.process_iter(["pid", "cmdline", "status", "ppid", "name"])
                if p.pid in pids
            ]
            raise AssertionError(f"still running: {[p.info for p in left]}") from None
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()
