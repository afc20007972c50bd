"""``python -m distributed_client.demo``: a tour of the clients on a local cluster.

Starts a LocalCluster (a center and two workers as subprocesses), runs a Pool
map, a dask graph (a plain dict, plus dask.array when dask is installed) and
an Executor workload, and prints results and timings. Installs nothing.
"""

from __future__ import annotations

import sys
import time
from operator import add


def inc(x):
    return x + 1


def _line(what: str, result, seconds: float) -> None:
    print(f"  {what:<44} -> {result!s:<28} {seconds * 1000:8.1f} ms", flush=True)


def main(n_workers: int = 2, ncores: int = 1) -> int:
    from distributed_client import Executor, LocalCluster, Pool, get

    t0 = time.perf_counter()
    with LocalCluster(n_workers=n_workers, ncores=ncores) as cluster:
        print(
            f"LocalCluster: center {cluster.center_address}, {n_workers} workers x {ncores} "
            f"core(s), started in {(time.perf_counter() - t0) * 1000:.0f} ms",
            flush=True,
        )

        print("Pool")
        with Pool(cluster.center_address) as pool:
            t = time.perf_counter()
            A = pool.map(lambda x: x**2, range(10), remote=True)
            B = pool.map(lambda x: -x, A, remote=True)
            total = pool.apply(sum, [B])
            _line("apply(sum, map(neg, map(square, range(10))))", total, time.perf_counter() - t)
            if total != -285:
                raise AssertionError(f"expected -285, got {total}")
            t = time.perf_counter()
            squares = pool.gather(A)
            _line("gather(A)", squares[:5] + ["..."], time.perf_counter() - t)
            t = time.perf_counter()
            values = pool.map(inc, range(2000))
            dt = time.perf_counter() - t
            _line(f"map(inc, range(2000)) ({2000 / dt:,.0f}/s)", sum(values), dt)

        print("get (dask graphs)")
        dsk = {"x": 1, "y": (inc, "x"), "z": (add, "y", 10), ("w", 0): (sum, ["x", "y", "z"])}
        t = time.perf_counter()
        result = get(cluster.center_address, dsk, ["z", ("w", 0)])
        _line("get(dict graph, ['z', ('w', 0)])", result, time.perf_counter() - t)
        try:
            import dask
            import dask.array as da
            import numpy as np
        except ImportError:
            print("  (dask is not installed: skipping dask.array)")
        else:
            from functools import partial

            x = da.from_array(np.arange(10_000).reshape((100, 100)), chunks=(25, 25))
            t = time.perf_counter()
            (s,) = dask.compute((x + x.T).sum(), scheduler=partial(get, cluster.center_address))
            _line("dask.array (x + x.T).sum()", int(s), time.perf_counter() - t)

        print("Executor")
        with Executor(cluster.center_address) as e:
            t = time.perf_counter()
            level = e.map(inc, range(256))
            while len(level) > 1:
                level = [e.submit(add, level[i], level[i + 1]) for i in range(0, len(level), 2)]
            result = level[0].result()
            _line("256-leaf tree reduction", result, time.perf_counter() - t)
            t = time.perf_counter()
            n = 100
            for i in range(n):
                e.submit(inc, i, pure=False).result()
            dt = time.perf_counter() - t
            _line("submit(inc, i).result() round trip", f"{dt / n * 1000:.2f} ms each", dt)
    print(f"done in {time.perf_counter() - t0:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
