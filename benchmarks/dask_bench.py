"""dask collections on an Executor against dask.distributed's Client, in one run.

Both clusters have the same shape (a center/scheduler and 2 worker processes
x 1 thread, all local) and run at the same time; each client runs in its own
process, and the measurements are interleaved round by round (ours, dask,
dask, ours, ...), so both see the same machine state. Only same-run medians
and their ratios mean anything.

``persist``: a dask.array of ``--chunks`` blocks (``da.ones(n, chunks=10) + 1``,
one task per block after dask's fusion) persisted with ``Executor.persist`` /
``Client.persist`` until every block is in memory, then ``x.sum()`` of the
persisted array computed with ``compute(..., sync=True)`` (one task per block
and a tree of aggregations). Tasks/s over both steps. Target: >= 5x dask.

``get``: the same array's ``sum()`` through ``Executor.get`` / ``Client.get``
(``dask.compute(x, scheduler=...)``), for comparison with the figure before
``persist`` existed (4.7x).

This is a benchmark, not a test: nothing asserts on timings.

Usage::

    python benchmarks/dask_bench.py                # 10,000 blocks, 5 rounds
    python benchmarks/dask_bench.py --quick        # 1,000 blocks, 2 rounds
    python benchmarks/dask_bench.py --chunks 20000 --rounds 7
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import time


def _array(n_chunks: int):
    import dask.array as da

    return da.ones(n_chunks * 10, chunks=10) + 1


def _count_tasks(n_chunks: int) -> tuple[int, int]:
    """(tasks of persist, tasks of the sum of the persisted array), as dask optimises them."""
    import dask
    import numpy as np
    from dask.array import Array
    from dask.core import flatten

    x = _array(n_chunks)
    (persist_graph,) = dask.optimize(x)
    persist_tasks = len(persist_graph.__dask_graph__())
    # the sum of a persisted array: the blocks are data, the rest are tasks
    keys = list(flatten(x.__dask_keys__()))
    persisted = Array({k: np.ones(10) for k in keys}, x.name, x.chunks, x.dtype)
    total = len(dask.optimize(persisted.sum())[0].__dask_graph__())
    return persist_tasks, total - len(keys)


class Ours:
    name = "distributed_client"

    def __init__(self):
        from distributed_client import Executor, LocalCluster

        self.cluster = LocalCluster(n_workers=2, ncores=1)
        self.executor = Executor(self.cluster, set_as_default=False)

    def persist_compute(self, n_chunks):
        e = self.executor
        x = _array(n_chunks)
        p = e.persist(x)
        # until every block is in memory (the session's wait: the public
        # distributed_client.wait is quadratic until the issue-10 api work lands)
        e._sync(e.session.wait, [f.key for f in p.__dask_graph__().values()])
        total = e.compute(p.sum(), sync=True)
        assert total == 20 * n_chunks, total
        del p

    def get(self, n_chunks):
        import dask

        (total,) = dask.compute(_array(n_chunks).sum(), scheduler=self.executor)
        assert total == 20 * n_chunks, total

    def close(self):
        self.executor.close()
        self.cluster.close()


class Dask:
    name = "dask.distributed"

    def __init__(self):
        from distributed import Client, LocalCluster

        self.cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        self.client = Client(self.cluster)  # (its own process: being the default harms nothing)

    def persist_compute(self, n_chunks):
        from distributed import futures_of, wait

        c = self.client
        x = _array(n_chunks)
        p = c.persist(x)
        wait(futures_of(p))
        total = c.compute(p.sum(), sync=True)
        assert total == 20 * n_chunks, total
        del p

    def get(self, n_chunks):
        import dask

        (total,) = dask.compute(_array(n_chunks).sum(), scheduler=self.client.get)
        assert total == 20 * n_chunks, total

    def close(self):
        self.client.close()
        self.cluster.close()


# --------------------------------------------------------------------------- running


def _driver(kind: str, conn) -> None:
    if kind == "dask":
        import distributed  # noqa: F401 - configures its loggers; quiet them after

    logging.basicConfig(level=logging.ERROR)
    for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.core"):
        logging.getLogger(name).setLevel(logging.ERROR)
    system = None
    while True:
        cmd, args = conn.recv()
        try:
            if cmd == "stop":
                if system is not None:
                    system.close()
                conn.send(("ok", None))
                return
            if cmd == "start":
                system = Ours() if kind == "ours" else Dask()
                result = None
            else:
                t = time.perf_counter()
                getattr(system, cmd)(*args)
                result = time.perf_counter() - t
            conn.send(("ok", result))
        except BaseException as e:  # report, keep serving
            conn.send(("error", f"{type(e).__name__}: {e}"))


class Driver:
    def __init__(self, kind: str):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_driver, args=(kind, child), daemon=False)
        self.proc.start()

    def __call__(self, cmd: str, *args):
        self.conn.send((cmd, args))
        status, result = self.conn.recv()
        if status != "ok":
            raise RuntimeError(result)
        return result

    def close(self):
        try:
            self("stop")
        finally:
            self.proc.join(30)


def interleaved(rounds, variants):
    """``variants``: {name: callable returning seconds}; alternate the order each round."""
    samples = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            samples[name].append(variants[name]())
    return {name: statistics.median(v) for name, v in samples.items()}, samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=10_000, help="blocks of the array (10,000)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (5)")
    parser.add_argument("--quick", action="store_true", help="1,000 blocks, 2 rounds")
    parser.add_argument("--only", default="persist,get", help="comma-separated: persist,get")
    args = parser.parse_args()
    if args.quick:
        args.chunks, args.rounds = 1000, 2
    only = set(args.only.split(","))
    n = args.chunks
    persist_tasks, sum_tasks = _count_tasks(n)
    print(
        f"# dask_bench: {platform.python_version()} on {platform.machine()}, "
        f"{os.cpu_count()} cpus; {n} blocks: persist {persist_tasks} tasks, "
        f"sum of the persisted array {sum_tasks} tasks; {args.rounds} rounds"
    )
    ours, dask = Driver("ours"), Driver("dask")
    rows = []
    try:
        ours("start")
        dask("start")
        # warm up (imports, connections, function caches)
        for d in (ours, dask):
            d("persist_compute", min(n, 100))
            d("get", min(n, 100))
        if "persist" in only:
            med, _ = interleaved(
                args.rounds,
                {
                    "ours": lambda: ours("persist_compute", n),
                    "dask": lambda: dask("persist_compute", n),
                },
            )
            tasks = persist_tasks + sum_tasks
            rows.append(("persist+compute", tasks, med["ours"], med["dask"], 5.0))
        if "get" in only:
            med, _ = interleaved(
                args.rounds,
                {"ours": lambda: ours("get", n), "dask": lambda: dask("get", n)},
            )
            import dask as _dask

            graph_tasks = len(_dask.optimize(_array(n).sum())[0].__dask_graph__())
            rows.append(("get (sum)", graph_tasks, med["ours"], med["dask"], 5.0))
    finally:
        ours.close()
        dask.close()
    print(f"{'measure':<18}{'tasks':>8}{'ours s':>10}{'dask s':>10}{'ours/s':>10}"
          f"{'dask/s':>10}{'ratio':>8}  target met?")  # fmt: skip
    for name, tasks, o, d, target in rows:
        ratio = d / o
        print(
            f"{name:<18}{tasks:>8}{o:>10.3f}{d:>10.3f}{tasks / o:>10.0f}{tasks / d:>10.0f}"
            f"{ratio:>7.1f}x  >= {target:.0f}x {'yes' if ratio >= target else 'NO'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
