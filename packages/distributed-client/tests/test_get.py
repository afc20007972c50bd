"""get(): tuple graphs and dask collections on a real cluster."""

from __future__ import annotations

import asyncio
from functools import partial
from operator import add, mul

import pytest

from distributed_client import GraphError, get, scatter
from distributed_core import RemoteTraceback


def inc(x):
    return x + 1


def boom(x):
    raise ValueError(f"bad value {x}")


def test_tuple_graph(center):
    dsk = {"x": 1, "y": (inc, "x"), "z": (add, "y", (mul, "x", 10))}
    assert get(center, dsk, "z") == 12
    assert get(center, dsk, ["x", ["y", "z"]]) == [1, [2, 12]]


def test_tuple_keys_lists_and_nested_tasks(center):
    dsk = {("a", i): i for i in range(4)}
    dsk[("b", 0)] = (sum, [("a", i) for i in range(4)])
    dsk["c"] = (add, (inc, ("b", 0)), 1)
    dsk["d"] = "c"
    assert get(center, dsk, [("b", 0), "c", "d"]) == [6, 8, 8]


def test_same_key_names_in_different_graphs(center):
    assert get(center, {"x": 1, "y": (inc, "x")}, "y") == 2
    assert get(center, {"x": 10, "y": (inc, "x")}, "y") == 11


def test_errors_before_sending(center):
    with pytest.raises(GraphError, match="cycle"):
        get(center, {"a": (inc, "b"), "b": (inc, "a")}, "a")
    with pytest.raises(GraphError, match="zzz"):
        get(center, {"a": 1}, "zzz")
    with pytest.raises(TypeError, match="pickle"):
        import threading

        lock = threading.Lock()
        get(center, {"a": (lambda: lock,)}, "a")


def test_task_error_and_dependents(center):
    dsk = {"x": 1, "y": (boom, "x"), "z": (inc, "y")}
    with pytest.raises(ValueError, match="bad value 1") as info:
        get(center, dsk, "z")
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "boom" in str(info.value.__cause__)
    assert get(center, {"x": 1, "y": (inc, "x")}, "y") == 2  # still healthy


def test_data_locality(center, cluster):
    big = scatter(center, {"locality-big": b"x" * 1_000_000})["locality-big"]
    holder = big._session.state.who_has(["locality-big"])["locality-big"][0]
    other = [w for w in cluster.worker_addresses if w != holder][0]

    def where(data):
        import os

        return os.getpid(), len(data)

    pid_of = {}
    for w in cluster.worker_addresses:
        pid_of[w] = cluster.worker_processes[cluster.worker_addresses.index(w)].pid
    from distributed_client import Executor

    with Executor(center) as e:
        [x] = e.scatter([b"y" * 1_000_000], workers=[holder])
        results = [e.submit(where, x, pure=False) for _ in range(4)]
        for r in results:
            pid, n = r.result()
            assert n == 1_000_000
            assert pid == pid_of[holder], f"ran on {other} instead of the data's holder"


def test_asynchronous_get(center):
    async def main():
        return await get(center, {"x": 1, "y": (inc, "x")}, ["y"], asynchronous=True)

    assert asyncio.run(main()) == [2]


# ---------------------------------------------------------------------- dask


def compare(center, collection):
    dask = pytest.importorskip("dask")
    expected = dask.compute(collection, scheduler="sync")[0]
    got = dask.compute(collection, scheduler=partial(get, center))[0]
    return expected, got


def test_dask_array(center):
    np = pytest.importorskip("numpy")
    da = pytest.importorskip("dask.array")
    x = da.random.default_rng(42).random((40, 40), chunks=(10, 10))
    y = (x @ x.T + x.mean(axis=0)).std(axis=1)
    expected, got = compare(center, y)
    np.testing.assert_allclose(expected, got)


def test_dask_bag(center):
    db = pytest.importorskip("dask.bag")
    b = db.from_sequence(range(100), npartitions=7).map(inc).filter(lambda v: v % 3)
    expected, got = compare(center, b.foldby(lambda v: v % 5, add))
    assert sorted(expected) == sorted(got)


def test_dask_dataframe(center):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    df = pd.DataFrame({"a": range(100), "b": [i % 7 for i in range(100)]})
    ddf = dd.from_pandas(df, npartitions=4)
    expected, got = compare(center, ddf.groupby("b").a.agg(["sum", "mean"]))
    pd.testing.assert_frame_equal(expected.sort_index(), got.sort_index())
    expected, got = compare(center, ddf[ddf.a > 50].b.value_counts())
    pd.testing.assert_series_equal(expected.sort_index(), got.sort_index())


def test_dask_delayed(center):
    dask = pytest.importorskip("dask")
    delayed = dask.delayed
    parts = [delayed(inc)(i) for i in range(10)]
    total = delayed(sum)(parts)
    expected, got = compare(center, [total, parts[3]])
    assert expected == got
