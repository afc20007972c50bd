"""User code against distributed_client's public API, checked by ``mypy --strict``
(``nox -s typecheck``) against the INSTALLED wheel: its ``py.typed`` must ship,
and every call below must type-check (an untyped public function fails
``--strict``'s disallow-untyped-calls). Never run; only type-checked.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, assert_type

import distributed_client
from distributed_client import (
    ALL_COMPLETED,
    Executor,
    Future,
    LocalCluster,
    Pool,
    as_completed,
    fire_and_forget,
    wait,
)


def inc(x: int) -> int:
    return x + 1


def use_executor(address: str) -> None:
    with LocalCluster(n_workers=1, ncores=1) as cluster:
        assert_type(cluster, LocalCluster)
        html: str = cluster._repr_html_()
        with Executor(cluster) as e:
            assert_type(e, Executor)
            f = e.submit(inc, 1, retries=2, priority=1, workers=[address], key="k", pure=False)
            assert_type(f, Future)
            fs = e.map(inc, range(10), batch_size=100, resources={"GPU": 1}, timeout=5.0)
            assert_type(fs, list[Future])
            done, not_done = concurrent.futures.wait(fs, timeout=1)
            for g in concurrent.futures.as_completed(fs):
                g.result()
            r = wait(fs, timeout=1.0, return_when=ALL_COMPLETED)
            for h in as_completed(fs, with_results=False):
                print(h.key, h.done(), h.running(), h.cancelled(), h.status)
            f.retry()
            f.cancel()
            e.cancel(fs)
            fire_and_forget(f)
            exc: BaseException | None = f.exception(timeout=1.0)
            value: Any = f.result(timeout=1.0)
            who: dict[Any, Any] = e.who_has(fs)
            has: dict[Any, Any] = e.has_what()
            ncores: dict[Any, Any] = e.ncores()
            one = e.scatter(b"abc")
            html = e._repr_html_() + f._repr_html_()
            print(done, not_done, r, exc, value, who, has, ncores, one, html)
    with Executor() as own:
        print(own.cluster)
    with Pool(address) as pool:
        print(pool.scheduler_info())
    print(distributed_client.get(address, {"x": 1}, "x"))
