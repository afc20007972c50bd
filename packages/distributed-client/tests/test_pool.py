"""Pool against a real cluster (LocalCluster subprocesses)."""

from __future__ import annotations

import asyncio
import gc
import threading
import time

import pytest

from distributed_client import AsyncResult, Pool, RemoteData
from distributed_core import RemoteTraceback


def inc(x):
    return x + 1


def boom(x):
    raise ZeroDivisionError(f"boom {x}")


def slow(x, delay=0.2):
    time.sleep(delay)
    return x


def center_keys(pool):
    async def f():
        has_what = await pool.session.center_call("has_what")
        return {k for ks in has_what.values() for k in ks}

    return pool._sync(f)


def test_quickstart(center):
    with Pool(center) as pool:
        A = pool.map(lambda x: x**2, range(10))
        B = pool.map(lambda x: -x, A)
        assert pool.apply(sum, [B]).get() == -285
        assert pool.gather(A) == [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]
        assert all(isinstance(a, RemoteData) for a in A)
        assert A[0].get() == 0
        assert A[3].status == "finished"
        r = repr(A[0])
        assert A[0].key in r and center in r


def test_results_stay_on_the_worker(center):
    with Pool(center) as pool:
        [x] = pool.scatter([list(range(1000))])
        y = pool.apply(len, [x])
        holder = pool.session.state.who_has([x.key])[x.key]
        assert pool.session.state.who_has([y.key])[y.key] == holder
        assert y.get() == 1000


def test_apply_async(center):
    with Pool(center) as pool:
        ar = pool.apply_async(slow, [5], {"delay": 0.3})
        assert isinstance(ar, AsyncResult)
        assert not ar.ready()
        with pytest.raises(ValueError):
            ar.successful()
        with pytest.raises(TimeoutError):
            ar.get(timeout=0.01)
        ar.wait(0.01)
        rd = ar.get(timeout=10)
        assert ar.ready() and ar.successful()
        assert rd.get() == 5
        got = []
        done = threading.Event()

        def cb(r):
            got.append(r)
            done.set()

        pool.apply_async(inc, [1], callback=cb)
        assert done.wait(10)
        assert got[0].get() == 2


def test_function_error_reaches_user(center):
    with Pool(center) as pool:
        with pytest.raises(ZeroDivisionError, match="boom 3") as info:
            pool.map(boom, [3])
        assert isinstance(info.value.__cause__, RemoteTraceback)
        assert "boom" in str(info.value.__cause__)
        ar = pool.apply_async(boom, [4])
        ar.wait(10)
        assert ar.ready() and not ar.successful()
        with pytest.raises(ZeroDivisionError):
            ar.get()
        # dependents fail with the same error
        [bad] = pool.map_async(boom, [5])
        dep = pool.apply_async(inc, [bad.key and bad._remote])
        with pytest.raises(ZeroDivisionError, match="boom 5"):
            dep.get(10)
        # the cluster is still healthy
        assert pool.gather(pool.map(inc, [1, 2])) == [2, 3]


def test_unpicklable_function_fails_before_sending(center):
    lock = threading.Lock()
    with Pool(center) as pool:
        with pytest.raises(TypeError, match="cannot pickle"):
            pool.apply(lambda: lock)
        with pytest.raises(TypeError, match="callable"):
            pool.map(42, [1])


def test_data_released_when_last_reference_goes(center):
    with Pool(center) as pool:
        A = pool.map(inc, range(20))
        keys = {a.key for a in A}
        assert keys <= center_keys(pool) or _eventually(lambda: keys <= center_keys(pool))
        del A
        gc.collect()
        assert _eventually(lambda: not (keys & center_keys(pool)))


def test_close_join_terminate(center):
    pool = Pool(center)
    ars = [pool.apply_async(slow, [i], {"delay": 0.05}) for i in range(4)]
    pool.close()
    with pytest.raises(ValueError):
        pool.map(inc, [1])
    pool.join()
    assert all(a.ready() for a in ars)
    pool.terminate()
    assert pool.status == "closed"

    pool = Pool(center)
    with pytest.raises(ValueError, match="close"):
        pool.join()
    pool.apply_async(slow, [1], {"delay": 2})
    t = time.time()
    pool.terminate()
    assert time.time() - t < 1.5


def test_gather_dict_and_keys(center):
    with Pool(center) as pool:
        d = pool.scatter({"pool-a": 1, "pool-b": 2})
        assert pool.gather(d) == {"pool-a": 1, "pool-b": 2}
        assert pool.gather(["pool-a", "pool-b"]) == [1, 2]
        with pytest.raises(KeyError, match="nope"):
            pool.gather(["nope-not-a-key"])


def test_asynchronous_pool(center):
    async def main():
        async with Pool(center, asynchronous=True) as pool:
            A = await pool.map(lambda x: x**2, range(10))
            B = await pool.map(lambda x: -x, A)
            total = await pool.apply(sum, [B])
            assert await total.get() == -285
            assert await pool.gather(A) == [x**2 for x in range(10)]
            ar = await pool.apply_async(inc, [1])
            rd = await ar.get(5)
            assert await rd.get() == 2

    asyncio.run(main())


def test_bad_center_is_a_clear_error():
    t = time.time()
    with pytest.raises(OSError, match="is a center running"):
        Pool("127.0.0.1:1", timeout=0.3)
    assert time.time() - t < 5
    with pytest.raises(ValueError):
        Pool("tcp://nohost")


def _eventually(cond, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_join_after_results_were_dropped(center):
    pool = Pool(center)
    try:
        pool.map_async(slow, range(4))  # AsyncResults dropped at once
        gc.collect()
        pool.close()
        pool.join()  # returns: dropped work counts as finished
    finally:
        pool.terminate()


def test_remote_data_from_elsewhere(center):
    from distributed_client import gather, scatter

    rds = scatter(center, [1, 2, 3])  # the module-level session, not the pool's
    with Pool(center) as pool:
        assert pool.gather(pool.map(inc, rds)) == [2, 3, 4]
        assert pool.gather(rds) == [1, 2, 3]
    assert gather(center, rds) == [1, 2, 3]  # closing the pool left borrowed data alone
