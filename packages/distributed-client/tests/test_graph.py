"""Graph normalization: tuple graphs and dask task-spec graphs, without a cluster.

``run_local`` plays the worker: it substitutes data for keys the way the
contract says a worker does (top level and inside lists, tuples, dict
values), after a pickle round trip of everything that is sent.
"""

from __future__ import annotations

import pickle
from operator import add, mul

import cloudpickle
import pytest

from distributed_client._graph import (
    Call,
    flatten_keys,
    normalize_graph,
    pack_results,
)
from distributed_client.errors import GraphError


def inc(x):
    return x + 1


def _sub(obj, data):
    typ = type(obj)
    if typ is tuple:
        try:
            if obj in data:
                return data[obj]
        except TypeError:
            pass
    if typ is tuple or typ is list:
        return typ(_sub(o, data) for o in obj)
    if typ is dict:
        return {k: _sub(v, data) for k, v in obj.items()}
    if typ in (str, bytes, int) and obj in data:
        return data[obj]
    return obj


def run_local(dsk, keys):
    g = normalize_graph(dsk, keys)
    keymap = {k: f"ck-{i}" for i, k in enumerate(g.order)}
    store = {}
    for k in g.order:
        call = g.calls[k]
        args, kwargs, needed = call.translate(keymap)
        # what travels: the function is (cloud)pickled, args too
        function = pickle.loads(cloudpickle.dumps(call.function))
        args = pickle.loads(cloudpickle.dumps(args))
        data = {n: store[n] for n in needed}
        store[keymap[k]] = function(*_sub(list(args), data), **_sub(kwargs, data))
    return pack_results(keys, {k: store[keymap[k]] for k in g.keys})


def test_flatten_and_pack():
    keys = ["a", [("b", 1), ["c"]], []]
    assert flatten_keys(keys) == ["a", ("b", 1), "c"]
    assert pack_results(keys, {"a": 1, ("b", 1): 2, "c": 3}) == [1, [2, [3]], []]
    assert flatten_keys(("x", 0)) == [("x", 0)]


def test_tuple_graph_basic():
    dsk = {"x": 1, "y": (inc, "x"), "z": (add, "y", 10)}
    assert run_local(dsk, "z") == 12
    assert run_local(dsk, ["x", ["y", "z"]]) == [1, [2, 12]]


def test_tuple_graph_flat_calls_need_no_runner():
    g = normalize_graph({"x": 1, "y": (add, "x", 2)}, ["y"])
    assert g.calls["y"].function is add
    assert g.order == ["x", "y"]


def test_tuple_keys_nested_tasks_and_lists():
    dsk = {
        ("a", 0): 1,
        ("a", 1): 2,
        ("b", 0): (sum, [("a", 0), ("a", 1), (inc, ("a", 1))]),
        "c": (mul, (add, ("b", 0), 1), (inc, 1)),
        "alias": "c",
        "lit": [1, 2, 3],
        "strlit": (add, "not-a-key-", "c-suffix"),
    }
    assert run_local(dsk, [("b", 0), "c", "alias", "lit", "strlit"]) == [
        6,
        14,
        14,
        [1, 2, 3],
        "not-a-key-c-suffix",
    ]


def test_literal_containers_kept_exact():
    dsk = {"x": 1, "y": (lambda t, d: (t, d), ("x", "q"), {"k": "x"})}
    # tuples and dicts that are not tasks are literals in the tuple-graph spec
    assert run_local(dsk, "y") == (("x", "q"), {"k": "x"})


def test_culling():
    dsk = {"x": 1, "y": (inc, "x"), "unused": (inc, "y")}
    g = normalize_graph(dsk, ["y"])
    assert set(g.calls) == {"x", "y"}


def test_missing_output_key():
    with pytest.raises(GraphError, match="nope"):
        normalize_graph({"x": 1}, ["nope"])


def test_cycle_detected():
    dsk = {"a": (inc, "b"), "b": (inc, "c"), "c": (inc, "a"), "d": (inc, "a")}
    with pytest.raises(GraphError, match="cycle"):
        normalize_graph(dsk, ["d"])


def test_self_reference_is_cycle():
    with pytest.raises(GraphError, match="cycle"):
        normalize_graph({"a": (inc, "a")}, ["a"])


def test_deep_chain_no_recursion():
    n = 5000
    dsk = {"x0": 0}
    for i in range(1, n):
        dsk[f"x{i}"] = (inc, f"x{i - 1}")
    g = normalize_graph(dsk, [f"x{n - 1}"])
    assert len(g.order) == n
    assert g.order[0] == "x0"


def test_not_a_graph():
    with pytest.raises(TypeError, match="dict of tasks"):
        normalize_graph([1, 2], ["x"])


# ---------------------------------------------------------------------- task spec


@pytest.fixture
def _ts():
    return pytest.importorskip("dask._task_spec")


def test_task_spec_graph(_ts):
    Task, Alias, DataNode, TaskRef = _ts.Task, _ts.Alias, _ts.DataNode, _ts.TaskRef
    dsk = {
        "a": DataNode("a", 10),
        "b": Task("b", inc, TaskRef("a")),
        "c": Task("c", add, TaskRef("b"), Task(None, mul, TaskRef("a"), 2)),
        "d": Alias("d", "c"),
        ("e", 0): Task(("e", 0), sum, _ts.List(TaskRef("a"), TaskRef("b"))),
        "f": Task("f", lambda x, y=0: x - y, TaskRef("c"), y=TaskRef("a")),
    }
    assert run_local(dsk, ["b", "c", "d", ("e", 0), "f"]) == [11, 31, 31, 21, 21]
    g = normalize_graph(dsk, ["b"])
    assert g.calls["b"].function is inc  # flat: sent as is


def test_task_spec_missing_dependency(_ts):
    dsk = {"b": _ts.Task("b", inc, _ts.TaskRef("nope"))}
    with pytest.raises(GraphError, match="nope"):
        normalize_graph(dsk, ["b"])


def test_task_spec_cycle(_ts):
    dsk = {
        "a": _ts.Task("a", inc, _ts.TaskRef("b")),
        "b": _ts.Task("b", inc, _ts.TaskRef("a")),
    }
    with pytest.raises(GraphError, match="cycle"):
        normalize_graph(dsk, ["a"])


def _compare_with_dask(collection):
    dask = pytest.importorskip("dask")

    expected = dask.compute(collection, scheduler="sync")[0]

    def scheduler(dsk, keys, **kwargs):
        return run_local(dsk, keys)

    got = dask.compute(collection, scheduler=scheduler)[0]
    return expected, got


def test_dask_array():
    np = pytest.importorskip("numpy")
    da = pytest.importorskip("dask.array")
    x = da.arange(100, chunks=10).reshape((10, 10)).rechunk((5, 5))
    y = (x + x.T).sum(axis=0) * 2
    expected, got = _compare_with_dask(y)
    np.testing.assert_array_equal(expected, got)


def test_dask_bag():
    db = pytest.importorskip("dask.bag")
    b = db.from_sequence(range(20), npartitions=4).map(inc).filter(lambda v: v % 3).frequencies()
    expected, got = _compare_with_dask(b)
    assert sorted(expected) == sorted(got)


def test_dask_delayed():
    dask = pytest.importorskip("dask")
    delayed = dask.delayed
    parts = [delayed(inc)(i) for i in range(5)]
    total = delayed(sum)(parts)
    expected, got = _compare_with_dask(total)
    assert expected == got == 15


def test_dask_dataframe():
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    df = pd.DataFrame({"a": range(30), "b": [i % 4 for i in range(30)]})
    ddf = dd.from_pandas(df, npartitions=3)
    res = ddf.groupby("b").a.sum()
    expected, got = _compare_with_dask(res)
    pd.testing.assert_series_equal(expected.sort_index(), got.sort_index())


def test_call_repr():
    assert "inc" in repr(Call(inc, [1]))


def test_tuple_graphs_need_no_dask(monkeypatch):
    import distributed_client._graph as graph

    monkeypatch.setattr(graph, "_task_spec", lambda: None)  # as if dask were not installed
    dsk = {"x": 1, "y": (inc, "x"), "z": (add, "y", (mul, "x", 10)), "w": (sum, ["x", "y"])}
    assert run_local(dsk, ["z", "w"]) == [12, 3]
