"""dask on an Executor, against a real cluster: get, compute, persist, the default scheduler."""

from __future__ import annotations

import os
import threading
from operator import add

import pytest

from distributed_client import Executor, Future, wait

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
np = pytest.importorskip("numpy")


def inc(x):
    return x + 1


def pid(_=None):
    return os.getpid()


@pytest.fixture(scope="module")
def e(cluster):
    with Executor(cluster.center_address, set_as_default=False) as ex:
        yield ex


def _in_thread(fn, timeout=60):
    """Run fn() in a thread; a hang fails the test instead of blocking it."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as exc:  # reported below
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"{fn} did not finish within {timeout} s (a deadlock?)"
    if "error" in out:
        raise out["error"]
    return out["value"]


# --------------------------------------------------------------------------- get


def test_get_returns_tuples_for_lists_like_dask_schedulers(e):
    dsk = {"x": 1, "y": (inc, "x"), "z": (add, "y", 10), "t": (tuple, ["x", "y"])}
    assert e.get(dsk, "z") == 12
    assert e.get(dsk, ["x", ["y", "z"]]) == (1, (2, 12))
    assert dask.get(dsk, ["x", ["y", "z"]]) == (1, (2, 12))  # dask's own answer
    assert e.get(dsk, "t") == (1, 2)  # a tuple value stays a tuple


def test_small_and_large_numpy_results_are_writable(e):
    for n in (10, 100_000):  # under and over 64 KiB
        x = da.ones(n, chunks=n // 2)
        (small,) = dask.compute(x, scheduler=e)
        assert small.flags.writeable
        small[0] = 5
        assert small[0] == 5
        y = e.get({"a": (np.ones, n)}, "a")
        assert y.flags.writeable


def test_graph_is_materialised_in_the_callers_thread(e):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    df = pd.DataFrame({"a": range(1000), "b": [1.5] * 1000})
    ddf = dd.from_pandas(df, npartitions=2)
    # repartition(partition_size=) computes sizes while the caller holds the
    # cached_property lock of the expression; it hung when `get` materialised
    # the graph on the event loop's thread
    with dask.config.set(scheduler=e):
        n = _in_thread(lambda: ddf.repartition(partition_size="1 MiB").npartitions)
    assert n == 1
    seen = []

    class Graph(dict):
        def __dask_graph__(self):
            seen.append(threading.current_thread())
            return self

    class NotAMapping:
        def __dask_graph__(self):
            seen.append(threading.current_thread())
            return {"x": (inc, 1)}

    assert e.get(NotAMapping(), "x") == 2
    assert seen == [threading.current_thread()]


# --------------------------------------------------------------------------- scheduler=


def test_dask_compute_with_scheduler_executor(e):
    x = da.arange(100, chunks=10)
    assert dask.compute(x.sum(), scheduler=e) == (4950,)
    assert x.sum().compute(scheduler=e) == 4950
    worker_pid = dask.delayed(pid)(1).compute(scheduler=e)
    assert worker_pid != os.getpid()  # ran on a worker


def test_asynchronous_executor_cannot_be_daskscheduler(cluster):
    import asyncio

    async def main():
        async with Executor(cluster.center_address, asynchronous=True) as ae:
            with pytest.raises(TypeError, match="asynchronous"):
                ae({"x": 1}, "x")

    asyncio.run(main())


# --------------------------------------------------------------------------- compute


def test_compute_futures_by_default_values_with_sync(e):
    x = da.arange(100, chunks=10)
    f = e.compute(x.sum())
    assert isinstance(f, Future) and f.result() == 4950
    assert e.compute(x.sum(), sync=True) == 4950
    assert e.compute([x.sum(), x.max()], sync=True) == [4950, 99]
    with pytest.raises(TypeError, match="not a dask collection"):
        e.compute(42)


def test_options_reach_every_task(e):
    x = da.arange(100, chunks=10) + 1
    y = e.persist(x, retries=2, priority=5)
    futures = [f for f in y.__dask_graph__().values() if isinstance(f, Future)]
    assert len(futures) == 10
    wait(futures)
    keys = [f.key for f in futures]

    def options():  # read on the loop's thread, after the submission
        return [e.session.state.tasks[k].options for k in keys]

    for opts in e._call_in_loop(options):
        assert opts.retries == 2 and opts.priority == 5
    assert e.compute(x.sum(), resources={"CPU": 1}, sync=False).key
    with pytest.raises(ValueError, match="retries=-1"):
        e.compute(x.sum(), retries=-1)
    with pytest.raises(ValueError, match="retries"):
        e.get({"x": 1}, "x", retries=-1)
    # keywords dask passes to schedulers are ignored
    assert e.get({"x": (inc, 1)}, "x", num_workers=4) == 2


# --------------------------------------------------------------------------- persist


def test_persist_array_is_backed_by_futures(e):
    x = da.arange(100, chunks=10) + 1
    y = e.persist(x)
    assert type(y) is type(x) and y.chunks == x.chunks
    values = list(y.__dask_graph__().values())
    assert len(values) == 10 and all(isinstance(v, Future) for v in values)
    assert all(v.result().flags.writeable for v in values)
    z = (y * 2).sum()
    assert dask.compute(z, scheduler=e) == (((np.arange(100) + 1) * 2).sum(),)
    ys = e.persist([x, x.sum()])
    assert isinstance(ys, list) and len(ys) == 2
    assert e.compute(ys[1], sync=True) == 5050


def test_persisted_data_is_not_recomputed(e):
    import random

    d = dask.delayed(random.random, pure=False)()
    p = e.persist(d)
    first = e.compute(p, sync=True)
    assert e.compute(p, sync=True) == first
    assert dask.compute(p + 1, scheduler=e) == (first + 1,)


def test_persist_dataframe(e):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    df = pd.DataFrame({"a": range(100), "b": range(100, 200)})
    p = e.persist(dd.from_pandas(df, npartitions=4))
    assert p.npartitions == 4
    assert e.compute(p.a.sum(), sync=True) == df.a.sum()
    pd.testing.assert_frame_equal(e.compute(p, sync=True), df)


def test_future_inside_a_graph(e):
    f = e.submit(inc, 1)
    d = dask.delayed(inc)(f)
    assert dask.compute(d, scheduler=e) == (3,)
    assert e.get({"x": f, "y": (inc, "x")}, "y") == 3
    assert e.get({"y": (inc, f)}, "y") == 3  # a Future as an argument of a tuple task
    assert e.get({"y": (sum, [f, (inc, f)])}, "y") == 5  # ... inside a nested task


def test_futures_of_another_executor_are_refused(e, cluster):
    with Executor(cluster.center_address, set_as_default=False) as other:
        y = other.persist(da.ones(10, chunks=5))
        with pytest.raises(ValueError, match="another Executor"):
            dask.compute(y.sum(), scheduler=e)


# --------------------------------------------------------------------------- default


def _dask_hands_persist_to_scheduler() -> bool:
    """Newer dask calls ``scheduler.persist`` from ``dask.persist``; older dask
    (2024.12) computes and keeps the values in the client."""
    import inspect

    import dask.base

    source = inspect.getsource(dask.base.persist)
    return "__self__" in source and "client.persist(" in source


def test_executor_is_daskdefault_while_open(cluster):
    before = dask.config.get("scheduler", None)
    with Executor(cluster.center_address) as e1:
        assert dask.config.get("scheduler") is e1
        # a plain compute runs on the cluster, not locally
        assert dask.delayed(pid)(1).compute() != os.getpid()
        x = da.arange(10, chunks=5)
        p = x.persist()
        if _dask_hands_persist_to_scheduler():
            # dask.persist calls the Executor's persist: results stay on the workers
            assert all(isinstance(v, Future) for v in p.__dask_graph__().values())
        assert p.sum().compute() == 45
        with Executor(cluster.center_address) as e2:
            assert dask.config.get("scheduler") is e2
        assert dask.config.get("scheduler") is e1
        with Executor(cluster.center_address, set_as_default=False):
            assert dask.config.get("scheduler") is e1
    assert dask.config.get("scheduler", None) is before
    assert dask.delayed(pid)(1).compute() == os.getpid()  # local again


def test_closing_out_of_order_leaves_the_open_one(cluster):
    before = dask.config.get("scheduler", None)
    e1 = Executor(cluster.center_address)
    e2 = Executor(cluster.center_address)
    try:
        e1.close()
        assert dask.config.get("scheduler") is e2
    finally:
        e2.close()
        e1.close()
    assert dask.config.get("scheduler", None) is before


# --------------------------------------------------------------------------- pure keys


def test_pure_keys_name_numpy_and_pandas_by_content_with_dasks_tokenize(e, monkeypatch):
    import cloudpickle

    from distributed_client import _tokenize

    pd = pytest.importorskip("pandas")
    a, b = np.arange(100_000), np.arange(100_000)
    assert e.submit(np.sum, a).key == e.submit(np.sum, b).key  # equal content, one task
    assert e.submit(np.sum, a).key != e.submit(np.sum, a + 1).key
    df = pd.DataFrame({"x": range(1000)})
    assert _tokenize.tokenize(df) == _tokenize.tokenize(df.copy())
    assert _tokenize.tokenize(df) != _tokenize.tokenize(df + 1)
    # dask names them, without pickling the data
    pickled = []
    real_dumps = cloudpickle.dumps
    monkeypatch.setattr(
        cloudpickle, "dumps", lambda *a, **k: pickled.append(1) or real_dumps(*a, **k)
    )
    assert _tokenize.tokenize("s", b"blob", (a,), None) == dask.base.tokenize(
        ("s", b"blob", (a,), None), {}, ensure_deterministic=True
    )
    assert not pickled
    # plain values keep the cheap pickle hash
    _tokenize.tokenize("s", b"blob", (1, "two", [3.0]), None)
    assert pickled


def test_pure_keys_without_dask_fall_back_to_the_pickle_hash(monkeypatch):
    from distributed_client import _tokenize

    monkeypatch.setattr(_tokenize, "_dask", [None])  # as if dask were not installed
    a = np.arange(10)
    assert _tokenize.tokenize(a) == _tokenize.tokenize(a.copy())
    assert _tokenize.tokenize(a) != _tokenize.tokenize(a + 1)
    with pytest.raises(TypeError, match="cannot pickle"):
        _tokenize.tokenize([threading.Lock()])


def test_unpicklable_argument_still_fails_early_with_dask(e):
    # dask cannot name a lock deterministically: the pickle fallback says why
    with pytest.raises(TypeError, match="pickle"):
        e.submit(len, [np.ones(3), threading.Lock()])
