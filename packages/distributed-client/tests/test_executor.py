"""Executor and Future against a real cluster."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from operator import add

import pytest

from distributed_client import (
    FIRST_COMPLETED,
    CancelledError,
    Executor,
    Future,
    as_completed,
    wait,
)
from distributed_client.progress import progress
from distributed_core import RemoteTraceback


def inc(x):
    return x + 1


def slow_inc(x, delay=0.1):
    time.sleep(delay)
    return x + 1


def boom(x):
    raise KeyError(f"no such thing {x}")


@pytest.fixture(scope="module")
def e(cluster):
    with Executor(cluster.center_address) as ex:
        yield ex


def test_submit_result(e):
    x = e.submit(inc, 1)
    assert isinstance(x, Future)
    assert x.result(timeout=10) == 2
    assert x.done() and x.status == "finished"
    assert x.exception() is None
    assert x.key.startswith("inc-")


def test_futures_as_arguments_stay_remote(e):
    x = e.submit(inc, 1)
    y = e.submit(add, x, 10)
    z = e.submit(sum, [x, y, 100])
    w = e.submit(lambda d: d["a"] * 2, {"a": z})
    assert w.result() == 2 * (2 + 12 + 100)
    # y ran where x was
    st = e.session.state
    assert set(st.who_has([y.key])[y.key]) & set(st.who_has([x.key])[x.key])


def test_pure_keys(e):
    a = e.submit(inc, 5)
    b = e.submit(inc, 5)
    c = e.submit(inc, 6)
    d = e.submit(inc, 5, pure=False)
    assert a.key == b.key != c.key
    assert d.key != a.key
    assert a.result() == b.result() == d.result() == 6


def test_map_and_gather(e):
    futures = e.map(inc, range(50))
    assert e.gather(futures) == list(range(1, 51))
    assert e.gather({"f": futures[0]}) == {"f": 1}
    assert e.gather(futures[3]) == 4
    two = e.map(add, range(5), range(5))
    assert e.gather(two) == [0, 2, 4, 6, 8]


def test_scatter(e):
    [x, y] = e.scatter([10, 20])
    assert e.submit(add, x, y).result() == 30
    d = e.scatter({"exec-key": 5})
    assert d["exec-key"].result() == 5


def test_errors(e):
    f = e.submit(boom, 1)
    with pytest.raises(KeyError, match="no such thing 1") as info:
        f.result()
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "boom" in str(info.value.__cause__)
    assert f.status == "error"
    assert isinstance(f.exception(), KeyError)
    g = e.submit(inc, f)
    with pytest.raises(KeyError, match="no such thing 1"):
        g.result()
    assert e.submit(inc, 1).result() == 2  # healthy


def test_result_timeout(e):
    f = e.submit(slow_inc, 1, delay=0.5, pure=False)
    with pytest.raises(TimeoutError):
        f.result(timeout=0.05)
    assert f.result(timeout=10) == 2


def test_cancel(e):
    f = e.submit(slow_inc, 1, delay=1, pure=False)
    g = e.submit(inc, f)
    assert f.cancel()
    with pytest.raises(CancelledError):
        f.result()
    with pytest.raises(CancelledError):
        g.result()
    assert f.cancelled() and f.status == "cancelled"


def test_add_done_callback(e):
    results = []
    done = threading.Event()

    def cb(fut):
        results.append(fut.result())  # blocking calls are fine in callbacks
        done.set()

    f = e.submit(slow_inc, 1, delay=0.05, pure=False)
    f.add_done_callback(cb)
    assert done.wait(10)
    assert results == [2]


def test_as_completed_and_wait(e):
    futures = [e.submit(slow_inc, i, delay=0.05 * (3 - i), pure=False) for i in range(3)]
    seen = list(as_completed(futures))
    assert set(seen) == set(futures)
    pairs = list(as_completed(e.map(inc, range(3)), with_results=True))
    assert sorted(r for _, r in pairs) == [1, 2, 3]
    fast = e.submit(inc, 100)
    slow = e.submit(slow_inc, 0, delay=2, pure=False)
    done, not_done = wait([fast, slow], return_when=FIRST_COMPLETED, timeout=5)
    assert fast in done and slow in not_done
    done, not_done = wait([slow], timeout=0.01)
    assert not done and not_done == {slow}
    slow.cancel()


def test_progress(e, capsys):
    futures = e.map(slow_inc, range(5), delay=0.01, pure=False)
    progress(futures)
    assert all(f.done() for f in futures)
    assert "5/5" in capsys.readouterr().err


def test_release_on_gc(e):
    f = e.submit(inc, 1000)
    key = f.key
    f.result()
    del f
    gc.collect()
    deadline = time.time() + 5
    while key in e.session.state.tasks and time.time() < deadline:
        time.sleep(0.02)
    assert key not in e.session.state.tasks


def test_get_and_dask_compute(e):
    assert e.get({"x": 1, "y": (inc, "x")}, ["y"]) == (2,)  # a tuple, as dask's get gives
    dask = pytest.importorskip("dask")
    da = pytest.importorskip("dask.array")
    x = da.arange(100, chunks=10)
    assert dask.compute(x.sum(), scheduler=e.get)[0] == 4950
    f = e.compute(x.sum())
    assert isinstance(f, Future)
    assert f.result() == 4950
    fs = e.compute([x.sum(), x.max()])
    assert e.gather(fs) == [4950, 99]


def test_workers_restriction(e, cluster):
    w = cluster.worker_addresses[1]
    f = e.submit(inc, 1, workers=[w], pure=False)
    f.result()
    assert e.session.state.who_has([f.key])[f.key] == [w]


def test_unpicklable_function_and_arguments(e):
    lock = threading.Lock()
    with pytest.raises(TypeError, match="pickle"):
        e.submit(lambda: lock)  # fails before anything is sent
    with pytest.raises(TypeError, match="pickle"):
        e.submit(len, [lock])  # pure=True hashes the arguments: fails before sending
    f = e.submit(len, [lock], pure=False)  # the argument cannot be sent: fails right after
    with pytest.raises(Exception, match="lock"):
        f.result(timeout=10)
    assert e.submit(inc, 1).result() == 2  # healthy


def test_many_outstanding_tasks_do_not_block_the_loop(e):
    futures = e.map(inc, range(5000), pure=False)
    t = time.time()
    # the loop stays responsive: a tiny round trip completes while 5000 are queued
    assert e.submit(inc, -1, pure=False).result(timeout=30) == 0
    assert e.gather(futures)[-1] == 5000
    assert time.time() - t < 30


def test_asynchronous_executor(cluster):
    async def main():
        async with Executor(cluster.center_address, asynchronous=True) as ex:
            x = ex.submit(inc, 1)
            y = ex.submit(add, x, 1)
            assert await y == 3
            assert await y.result() == 3
            fs = ex.map(inc, range(5))
            got = []
            async for f in as_completed(fs):
                got.append(await f)
            assert sorted(got) == [1, 2, 3, 4, 5]
            assert await ex.gather(fs) == [1, 2, 3, 4, 5]
            done, _ = await wait(fs)
            assert len(done) == 5
            [s] = await ex.scatter([7])
            assert await ex.submit(inc, s) == 8
            assert await ex.get({"a": 1, "b": (inc, "a")}, "b") == 2

    asyncio.run(main())
