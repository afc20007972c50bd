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
        A = pool.map(lambda x: x**2, range(10), remote=True)
        B = pool.map(lambda x: -x, A, remote=True)
        assert pool.apply(sum, [B]) == -285
        assert pool.gather(A) == [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]
        assert all(isinstance(a, RemoteData) for a in A)
        assert A[0].get() == 0
        assert A[3].status == "finished"
        r = repr(A[0])
        assert A[0].key in r and center in r


def test_results_stay_on_the_worker(center):
    with Pool(center) as pool:
        [x] = pool.scatter([list(range(1000))])
        y = pool.apply(len, [x], remote=True)
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
        assert ar.get(timeout=10) == 5
        assert ar.ready() and ar.successful()
        got = []
        done = threading.Event()

        def cb(r):
            got.append(r)
            done.set()

        pool.apply_async(inc, [1], callback=cb)
        assert done.wait(10)
        assert got == [2]
        done.clear()
        pool.apply_async(inc, [1], callback=cb, remote=True)
        assert done.wait(10)
        assert isinstance(got[1], RemoteData) and got[1].get() == 2


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
        [bad] = pool.map_async(boom, [5], remote=True).remote_data
        dep = pool.apply_async(inc, [bad])
        with pytest.raises(ZeroDivisionError, match="boom 5"):
            dep.get(10)
        # the cluster is still healthy
        assert pool.map(inc, [1, 2]) == [2, 3]


def test_unpicklable_function_fails_before_sending(center):
    lock = threading.Lock()
    with Pool(center) as pool:
        with pytest.raises(TypeError, match="cannot pickle"):
            pool.apply(lambda: lock)
        with pytest.raises(TypeError, match="callable"):
            pool.map(42, [1])


def test_data_released_when_last_reference_goes(center):
    with Pool(center) as pool:
        A = pool.map(inc, range(20), remote=True)
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
            A = await pool.map(lambda x: x**2, range(10), remote=True)
            B = await pool.map(lambda x: -x, A, remote=True)
            assert await pool.apply(sum, [B]) == -285
            assert await pool.gather(A) == [x**2 for x in range(10)]
            assert await pool.map(inc, range(3), chunksize=2) == [1, 2, 3]
            ar = await pool.apply_async(inc, [1])
            assert await ar.get(5) == 2
            assert [x async for x in await pool.imap(inc, range(5), chunksize=2)] == [1, 2, 3, 4, 5]
            got = sorted([x async for x in await pool.imap_unordered(inc, range(5))])
            assert got == [1, 2, 3, 4, 5]

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
        assert pool.map(inc, rds) == [2, 3, 4]
        assert pool.map(inc, rds, chunksize=2) == [2, 3, 4]  # RemoteData inside chunks
        assert pool.starmap(max, [(rds[0], 0), (rds[2], 5)], chunksize=2) == [1, 5]
        assert pool.gather(rds) == [1, 2, 3]
    assert gather(center, rds) == [1, 2, 3]  # closing the pool left borrowed data alone


# --------------------------------------------------------------------------- multiprocessing semantics


def square(x):
    return x * x


def fail_on_3(x):
    if x == 3:
        raise ValueError(f"bad {x}")
    return x


def test_map_starmap_apply_return_values_like_multiprocessing(center):
    from multiprocessing.pool import ThreadPool

    args = [(2, 3), (3, 2), (5, 0)]
    with Pool(center) as pool, ThreadPool(2) as local:
        for chunksize in (None, 1, 3, 100):
            assert pool.map(square, range(10), chunksize) == local.map(square, range(10))
            assert pool.starmap(pow, args, chunksize) == local.starmap(pow, args)
        assert pool.map(square, []) == local.map(square, []) == []
        assert pool.apply(pow, (2, 5)) == local.apply(pow, (2, 5)) == 32
        assert pool.apply(int, ("ff",), {"base": 16}) == 255
        ar = pool.starmap_async(pow, args)
        assert ar.get(10) == local.starmap_async(pow, args).get(10)
        with pytest.raises(ValueError, match="bad 3"):
            pool.map(fail_on_3, range(6), chunksize=2)
        with pytest.raises(ValueError, match="chunksize"):
            pool.map(square, range(4), chunksize=0)
        with pytest.raises(ValueError, match="remote=True"):
            pool.map(square, range(4), chunksize=2, remote=True)


def test_chunksize_makes_tasks_of_that_many_items(center):
    with Pool(center) as pool:
        before = len(pool.session.state.tasks)
        ar = pool.map_async(square, range(10), chunksize=4)
        assert len(ar._keys) == 3  # 4 + 4 + 2 items
        assert len(pool.session.state.tasks) - before == 3
        assert ar.get(10) == [x * x for x in range(10)]


def test_imap_and_imap_unordered_match_threadpool(center):
    from multiprocessing.pool import ThreadPool

    with Pool(center) as pool, ThreadPool(2) as local:
        for chunksize in (1, 3):
            assert list(pool.imap(square, range(20), chunksize)) == list(
                local.imap(square, range(20), chunksize)
            )
            got = list(pool.imap_unordered(square, range(20), chunksize))
            assert sorted(got) == sorted(local.imap_unordered(square, range(20), chunksize))
        # a failure raises at its place, and iteration goes on after it
        for p in (pool, local):
            it = p.imap(fail_on_3, range(5))
            assert [next(it), next(it), next(it)] == [0, 1, 2]
            with pytest.raises(ValueError, match="bad 3"):
                next(it)
            assert list(it) == [4]
        it = pool.imap_unordered(fail_on_3, range(5))
        got, errors = [], []
        while True:
            try:
                got.append(next(it))
            except StopIteration:
                break
            except ValueError as e:
                errors.append(e)
        assert sorted(got) == [0, 1, 2, 4] and len(errors) == 1
        assert list(pool.imap(square, [])) == []


def test_imap_unordered_gives_results_as_they_finish(center):
    with Pool(center) as pool:
        # the first item is a RemoteData still being computed: its task can
        # only start after that, long after the second item's task is done
        late = pool.apply_async(_sleep_then, [0.5], remote=True).remote_data
        assert list(pool.imap_unordered(_sleep_then, [late, 0.0])) == [0.0, 0.5]
        late = pool.apply_async(_sleep_then, [0.5], remote=True).remote_data
        assert list(pool.imap(_sleep_then, [late, 0.0])) == [0.5, 0.0]


def _sleep_then(delay):
    time.sleep(delay)
    return delay


def test_next_timeout_and_get_timeout_raise_multiprocessing_timeouterror(center):
    import multiprocessing

    with Pool(center) as pool:
        it = pool.imap(_sleep_then, [0.5])
        with pytest.raises(multiprocessing.TimeoutError):
            it.next(timeout=0.01)
        assert it.next(timeout=10) == 0.5
        ar = pool.map_async(_sleep_then, [0.5])
        with pytest.raises(TimeoutError):
            ar.get(0.01)
        assert not ar.ready()
        ar.wait(10)
        assert ar.ready() and ar.successful() and ar.get() == [0.5]


def test_map_async_callbacks_and_error_callback(center):
    got, errors = [], []
    done = threading.Event()

    def cb(value):
        got.append(value)
        done.set()

    def ecb(exc):
        errors.append(exc)
        done.set()

    with Pool(center) as pool:
        ar = pool.map_async(square, range(5), 2, callback=cb, error_callback=ecb)
        assert done.wait(10) and got == [[0, 1, 4, 9, 16]] and not errors
        done.clear()
        ar = pool.map_async(fail_on_3, range(5), callback=cb, error_callback=ecb)
        assert done.wait(10) and len(errors) == 1 and isinstance(errors[0], ValueError)
        assert ar.ready() and not ar.successful()
        done.clear()
        pool.starmap_async(pow, [(2, 2)], callback=cb)
        assert done.wait(10) and got[-1] == [4]
        pool.close()
        pool.join()


def test_values_are_released_on_the_cluster_once_gathered(center):
    with Pool(center) as pool:
        ar = pool.map_async(square, range(6))
        keys = set(ar._keys)
        assert ar.get(10) == [x * x for x in range(6)]
        assert ar.get() == [x * x for x in range(6)]  # get() again: the same values
        assert _eventually(lambda: not (keys & center_keys(pool)))
        it = pool.imap(square, range(6), 2)
        keys = set(it._remotes)
        assert list(it) == [x * x for x in range(6)]
        assert _eventually(lambda: not (keys & center_keys(pool)))


def test_gather_of_values_says_what_changed(center):
    with Pool(center) as pool:
        with pytest.raises(KeyError, match="remote=True"):
            pool.gather(pool.map(square, [123456]))


@pytest.mark.parametrize("how", ["terminate", "disconnect"])
def test_waiting_for_results_ends_when_the_pool_goes(center, how):
    from distributed_client._client import ClientBase

    pool = Pool(center)
    ar = pool.apply_async(_sleep_then, [2])
    it = pool.imap(_sleep_then, [2, 0])
    errors = {}

    def wait_for(name, fn):
        try:
            fn()
        except BaseException as e:  # reported below
            errors[name] = e

    threads = [
        threading.Thread(target=wait_for, args=("get", ar.get)),
        threading.Thread(target=wait_for, args=("next", lambda: next(it))),
    ]
    for t in threads:
        t.start()
    # Most likely both are waiting by now; if not, they find the pool closed:
    # either way they must end, so this sleep is not a synchronisation.
    time.sleep(0.3)
    if how == "terminate":
        pool.terminate()
    else:  # what leaving `with Pool(...)` by an exception does: no cancel first
        ClientBase.close(pool)
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads), "a wait outlived the pool"
    assert set(errors) == {"get", "next"}
