"""distributed-client against dask.distributed, on the same machine, in one run.

Both clusters run at the same time with the same shape (a center/scheduler
and 2 worker processes x 1 thread, all local), and every measurement is made
INTERLEAVED round by round (ours, dask, dask, ours, ...), so both see the
same machine state; only the same-run medians and their ratios are
meaningful.

1. ``map``: 10,000 trivial tasks (``inc``) + gathering the results, tasks/s
   (``Pool.map``, which returns values, vs ``Client.map`` + ``Client.gather``);
   also ``Executor.map`` + ``gather``. Target: >= 10x dask.distributed.
2. ``roundtrip``: sequential ``submit(inc, i).result()``, ms per call.
   Target: <= 1 ms.
3. ``tree``: a 10,000-task tree reduction (5,000 leaves, pairwise ``add``)
   through ``get`` vs ``Client.get``, tasks/s. Target: >= 5x dask.distributed.
4. ``startup``: ``LocalCluster(2 workers)`` start to first result, s
   (ours vs ``distributed.LocalCluster`` + ``Client``). Target: <= 1 s.
5. ``futures`` (issue 10): ``wait`` and ``as_completed`` over 100,000
   finished futures (the per-future cost of each; ``wait`` used to be
   quadratic), s; ``Executor.map`` of 10,000 ``inc`` with the scheduling
   keywords present (``retries``, ``priority``, ``workers``,
   ``allow_other_workers``) + gather vs ``Client.map`` with the same, tasks/s
   (target >= 10x); and the median of single ``submit(inc, i).result()``
   calls, ms (target <= 1 ms).

``--memory N`` instead measures only our client's memory per pending future
over N submits (tracemalloc; target <= 600 bytes) and the release of them.

This is a benchmark, not a test: nothing asserts on timings; the "met?"
column compares the medians with the project's targets.

Usage::

    python benchmarks/client_bench.py            # full run (a few minutes)
    python benchmarks/client_bench.py --quick    # smoke run
    python benchmarks/client_bench.py --only map,tree --rounds 7
    python benchmarks/client_bench.py --only futures
    python benchmarks/client_bench.py --memory 100000
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import time
from operator import add


def inc(x):
    return x + 1


# --------------------------------------------------------------------------- workloads


def tree_graph(n_leaves: int) -> tuple[dict, tuple]:
    dsk = {("leaf", i): (inc, i) for i in range(n_leaves)}
    level, names = [("leaf", i) for i in range(n_leaves)], 0
    while len(level) > 1:
        names += 1
        nxt = []
        for i in range(0, len(level) - 1, 2):
            key = (f"add-{names}", i // 2)
            dsk[key] = (add, level[i], level[i + 1])
            nxt.append(key)
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return dsk, level[0]


class Ours:
    name = "distributed_client"

    def __init__(self):
        from distributed_client import Executor, LocalCluster, Pool

        self.cluster = LocalCluster(n_workers=2, ncores=1)
        self.pool = Pool(self.cluster.center_address)
        self.executor = Executor(self.cluster.center_address)

    def map(self, n):
        values = self.pool.map(inc, range(n))  # values, gathered as results finish
        assert values[-1] == n
        return values

    def executor_map(self, n):
        futures = self.executor.map(inc, range(n), pure=False)
        values = self.executor.gather(futures)
        assert values[-1] == n

    def roundtrip(self, n):
        e = self.executor
        for i in range(n):
            assert e.submit(inc, i, pure=False).result() == i + 1

    def tree(self, dsk, key, expected):
        from distributed_client import get

        assert get(self.cluster.center_address, dsk, key) == expected

    # -- issue 10: futures (see the module docstring, 5.)

    def prepare_finished(self, n):
        from distributed_client import wait

        self.finished = self.executor.map(inc, range(n), pure=False)
        wait(self.finished)

    def wait_finished(self):
        from distributed_client import wait

        assert not wait(self.finished).not_done

    def as_completed_finished(self):
        from distributed_client import as_completed

        assert sum(1 for _ in as_completed(self.finished)) == len(self.finished)

    def drop_finished(self):
        self.finished = None

    def map_with_options(self, n):
        workers = self.cluster.worker_addresses
        futures = self.executor.map(
            inc, range(n), pure=False, retries=2, priority=1, workers=workers,
            allow_other_workers=True,
        )  # fmt: skip
        assert self.executor.gather(futures)[-1] == n

    def roundtrip_samples(self, n):
        e, out = self.executor, []
        for i in range(n):
            t = time.perf_counter()
            assert e.submit(inc, i, pure=False).result() == i + 1
            out.append(time.perf_counter() - t)
        return out

    def close(self):
        self.executor.close()
        self.pool.close()
        self.cluster.close()

    @staticmethod
    def startup():
        from distributed_client import Executor, LocalCluster

        t = time.perf_counter()
        with LocalCluster(n_workers=2, ncores=1) as cluster:
            with Executor(cluster.center_address) as e:
                assert e.submit(inc, 1).result() == 2
                dt = time.perf_counter() - t
        return dt


class Dask:
    name = "dask.distributed"

    def __init__(self):
        from distributed import Client, LocalCluster

        self.cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        self.client = Client(self.cluster)

    def map(self, n):
        futures = self.client.map(inc, range(n), pure=False)
        values = self.client.gather(futures)
        assert values[-1] == n
        del futures

    def roundtrip(self, n):
        c = self.client
        for i in range(n):
            assert c.submit(inc, i, pure=False).result() == i + 1

    def tree(self, dsk, key, expected):
        assert self.client.get(dsk, key) == expected

    # -- issue 10: futures (see the module docstring, 5.)

    def prepare_finished(self, n):
        from distributed import wait

        self.finished = self.client.map(inc, range(n), pure=False)
        wait(self.finished)

    def wait_finished(self):
        from distributed import wait

        assert not wait(self.finished).not_done

    def as_completed_finished(self):
        from distributed import as_completed

        assert sum(1 for _ in as_completed(self.finished)) == len(self.finished)

    def drop_finished(self):
        self.finished = None

    def map_with_options(self, n):
        workers = list(self.client.scheduler_info()["workers"])
        futures = self.client.map(
            inc, range(n), pure=False, retries=2, priority=1, workers=workers,
            allow_other_workers=True,
        )  # fmt: skip
        assert self.client.gather(futures)[-1] == n

    def roundtrip_samples(self, n):
        c, out = self.client, []
        for i in range(n):
            t = time.perf_counter()
            assert c.submit(inc, i, pure=False).result() == i + 1
            out.append(time.perf_counter() - t)
        return out

    def close(self):
        self.client.close()
        self.cluster.close()

    @staticmethod
    def startup():
        from distributed import Client, LocalCluster

        t = time.perf_counter()
        with (
            LocalCluster(
                n_workers=2,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            ) as cluster,
            Client(cluster) as client,
        ):
            assert client.submit(inc, 1).result() == 2
            dt = time.perf_counter() - t
        return dt


# --------------------------------------------------------------------------- running
#
# Each system's client runs in its own process (its cluster's processes are its
# children), so the two never share a GIL or an event loop; the parent only
# sends commands and collects timings.


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
            elif cmd == "startup":
                result = (Ours if kind == "ours" else Dask).startup()
            elif cmd in UNTIMED:
                result = getattr(system, cmd)(*args)
            else:
                result = timed(getattr(system, cmd), *args)
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


#: driver commands whose own result is sent back (not their duration)
UNTIMED = {"prepare_finished", "drop_finished", "roundtrip_samples"}


def timed(fn, *args):
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def interleaved(rounds, variants):
    """``variants``: {name: callable returning seconds}; alternate the order each round."""
    samples = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            samples[name].append(variants[name]())
    return {name: statistics.median(v) for name, v in samples.items()}, samples


def futures_rows(ours, theirs, rounds, n_futures, n_map, n_rt) -> list[tuple]:
    """Issue 10: wait/as_completed over finished futures, map with options, round trip."""
    rows = []
    ours("prepare_finished", n_futures)
    theirs("prepare_finished", n_futures)
    try:
        for cmd, label in (("wait_finished", "wait"), ("as_completed_finished", "as_completed")):
            med, _ = interleaved(
                rounds, {"ours": lambda c=cmd: ours(c), "dask": lambda c=cmd: theirs(c)}
            )
            rows.append((f"{label}() over {n_futures:,} finished futures", "s", med["ours"],
                         med["dask"], med["dask"] / med["ours"], ">= 5x",
                         med["dask"] / med["ours"] >= 5))  # fmt: skip
    finally:
        ours("drop_finished")
        theirs("drop_finished")
    med, _ = interleaved(
        rounds,
        {
            "ours": lambda: ours("map_with_options", n_map),
            "dask": lambda: theirs("map_with_options", n_map),
        },
    )
    o, d = n_map / med["ours"], n_map / med["dask"]
    rows.append((f"Executor.map {n_map:,} x inc, options", "tasks/s", o, d, o / d, ">= 10x",
                 o / d >= 10))  # fmt: skip
    samples = {"ours": [], "dask": []}
    for r in range(rounds):
        for name in ("ours", "dask") if r % 2 == 0 else ("dask", "ours"):
            samples[name] += (ours if name == "ours" else theirs)("roundtrip_samples", n_rt)
    o, d = (statistics.median(samples[k]) for k in ("ours", "dask"))
    rows.append(("submit().result(), median call", "ms", o * 1e3, d * 1e3, d / o, "<= 1 ms",
                 o <= 1e-3))  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per measure")
    parser.add_argument("--quick", action="store_true", help="small sizes, 2 rounds")
    parser.add_argument(
        "--only",
        default="map,roundtrip,tree,startup,futures",
        help="comma-separated measures to run",
    )
    parser.add_argument(
        "--n-futures", type=int, default=0, help="finished futures for wait/as_completed"
    )
    parser.add_argument(
        "--memory",
        type=int,
        metavar="N",
        help="only measure client memory per pending future over N submits (e.g. 100000)",
    )
    args = parser.parse_args()
    if args.memory:
        return client_memory(args.memory)
    only = set(args.only.split(","))
    rounds = 2 if args.quick else args.rounds
    n_map = 2_000 if args.quick else 10_000
    n_rt = 100 if args.quick else 500
    n_leaves = 1_000 if args.quick else 5_000
    n_futures = args.n_futures or (10_000 if args.quick else 100_000)

    try:
        import distributed  # noqa: F401
    except ImportError:
        print("dask.distributed is not importable: install it to compare", file=sys.stderr)
        return 1
    import dask
    import distributed as dd

    import distributed_client

    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
        f"distributed-client {distributed_client.__version__}, dask {dask.__version__}, "
        f"distributed {dd.__version__}"
    )
    print(f"clusters: 2 worker processes x 1 thread each; {rounds} interleaved rounds, medians\n")
    rows = []
    ours, theirs = Driver("ours"), Driver("dask")
    try:
        if "startup" in only:
            med, _ = interleaved(
                rounds, {"ours": lambda: ours("startup"), "dask": lambda: theirs("startup")}
            )
            rows.append(("LocalCluster start -> first result", "s", med["ours"], med["dask"],
                         med["dask"] / med["ours"], "<= 1 s", med["ours"] <= 1.0))  # fmt: skip
        ours("start")
        theirs("start")
        # warm up both (connections, imports on the workers)
        ours("map", 100)
        theirs("map", 100)
        ours("roundtrip", 10)
        theirs("roundtrip", 10)
        if "map" in only:
            med, _ = interleaved(
                rounds,
                {
                    "ours": lambda: ours("map", n_map),
                    "executor": lambda: ours("executor_map", n_map),
                    "dask": lambda: theirs("map", n_map),
                },
            )
            ours_rate, ex_rate, dask_rate = (n_map / med[k] for k in ("ours", "executor", "dask"))
            rows.append((f"Pool.map {n_map:,} x inc + gather", "tasks/s", ours_rate, dask_rate,
                         ours_rate / dask_rate, ">= 10x", ours_rate / dask_rate >= 10))  # fmt: skip
            rows.append((f"Executor.map {n_map:,} x inc + gather", "tasks/s", ex_rate, dask_rate,
                         ex_rate / dask_rate, ">= 10x", ex_rate / dask_rate >= 10))  # fmt: skip
        if "roundtrip" in only:
            med, _ = interleaved(
                rounds,
                {
                    "ours": lambda: ours("roundtrip", n_rt) / n_rt,
                    "dask": lambda: theirs("roundtrip", n_rt) / n_rt,
                },
            )
            rows.append(("submit(inc, i).result() round trip", "ms", med["ours"] * 1e3,
                         med["dask"] * 1e3, med["dask"] / med["ours"], "<= 1 ms",
                         med["ours"] <= 1e-3))  # fmt: skip
        if "tree" in only:
            dsk, key = tree_graph(n_leaves)
            expected = sum(range(1, n_leaves + 1))
            n_tasks = len(dsk)
            med, _ = interleaved(
                rounds,
                {
                    "ours": lambda: ours("tree", dsk, key, expected),
                    "dask": lambda: theirs("tree", dsk, key, expected),
                },
            )
            o, d = n_tasks / med["ours"], n_tasks / med["dask"]
            rows.append((f"get: tree reduction, {n_tasks:,} tasks", "tasks/s", o, d, o / d,
                         ">= 5x", o / d >= 5))  # fmt: skip
        if "futures" in only:
            rows += futures_rows(ours, theirs, rounds, n_futures, n_map, n_rt)
    finally:
        ours.close()
        theirs.close()

    print(f"{'measure':<40} {'unit':>8} {'ours':>10} {'dask':>10} {'ratio':>7}  target   met?")
    for name, unit, o, d, ratio, target, met in rows:
        print(
            f"{name:<40} {unit:>8} {o:>10,.2f} {d:>10,.2f} {ratio:>6.1f}x  {target:<8} "
            f"{'yes' if met else 'NO'}"
        )
    print("\nratio: how many times better ours is (higher is better for both kinds of unit)")
    return 0


def client_memory(n: int) -> int:
    """Client memory per pending future (tracemalloc), and what a release gives back.

    ``n`` submits of a trivial function to a cluster without workers (the
    tasks stay pending); the Future objects and their list count. Target
    (issue 10): <= 600 bytes per pending future.
    """
    import gc
    import tracemalloc

    from distributed_client import Executor, LocalCluster

    def wait_for(cond):
        deadline = time.monotonic() + 600
        while not cond():
            if time.monotonic() > deadline:
                raise TimeoutError("the client did not take the submissions in 600 s")
            time.sleep(0.05)

    with LocalCluster(n_workers=0) as cluster, Executor(cluster, no_workers_timeout=None) as e:
        s = e.session
        warm = e.submit(inc, -1)
        wait_for(lambda: len(s.state.tasks) == 1)
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        t0 = time.perf_counter()
        futures = [e.submit(inc, i) for i in range(n)]
        wait_for(lambda: len(s.state.tasks) == n + 1)
        elapsed = time.perf_counter() - t0
        gc.collect()
        pending = tracemalloc.get_traced_memory()[0] - base
        t0 = time.perf_counter()
        del futures
        wait_for(lambda: len(s.state.tasks) == 1)
        released = time.perf_counter() - t0
        gc.collect()
        left = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        del warm
    per = pending / n
    print(f"{n:,} pending futures (submitted in {elapsed:.1f} s under tracemalloc)")
    print(f"client memory per pending future: {per:,.0f} bytes (target <= 600: "
          f"{'yes' if per <= 600 else 'NO'})")  # fmt: skip
    print(
        f"release of all {n:,}: {released:.2f} s; left after release: {left / n:,.0f} bytes/future"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
