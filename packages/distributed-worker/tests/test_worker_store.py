"""Unit tests of the pure parts: DataStore, sizeof, substitute, ReportBatch."""

import sys

import numpy as np
import pytest

from distributed_core import Failure
from distributed_worker.batch import ReportBatch
from distributed_worker.sizeof import fallback_sizeof
from distributed_worker.store import DataStore, check_keys, sizeof
from distributed_worker.substitute import substitute


@pytest.fixture(params=["selected", "fallback"])
def measure(request):
    """The size function the store uses (dask's when importable) and the fallback."""
    return sizeof if request.param == "selected" else fallback_sizeof


def test_sizeof_numpy_and_bytes(measure):
    assert measure(np.zeros(1000, dtype="f8")) == 8000
    assert measure(np.zeros((10, 10), dtype="u1")[::2]) == 50
    assert measure(b"abc") == 3
    assert measure(bytearray(10)) == 10
    assert measure(memoryview(b"x" * 7)) == 7
    assert measure(memoryview(np.zeros(4, dtype="f8"))) == 32


def test_sizeof_is_deep(measure):
    arrays = [np.zeros(1000, dtype="f8") for _ in range(5)]
    assert 5 * 8000 <= measure(arrays) < 5 * 8000 + 2000
    assert 5 * 8000 <= measure(tuple(arrays)) < 5 * 8000 + 2000
    assert 5 * 8000 <= measure({i: a for i, a in enumerate(arrays)}) < 5 * 8000 + 2000
    nested = [[b"x" * 100] * 10] * 10
    assert measure(nested) >= 100 * 100


def test_sizeof_samples_big_containers(measure):
    big = [b"x" * 100] * 100_000
    assert 100 * 100_000 <= measure(big) < 2 * 100 * 100_000


def test_sizeof_fallback_and_broken():
    assert fallback_sizeof(12345) == sys.getsizeof(12345)
    assert fallback_sizeof([]) == sys.getsizeof([])

    class Broken:
        def __sizeof__(self):
            raise RuntimeError("no")

    assert sizeof(Broken()) >= 0
    assert fallback_sizeof(Broken()) == 0


def test_put_get_delete_accounting():
    s = DataStore()
    assert s.put("x", b"12345") == 5
    assert s.put(("y", 1), np.ones(4)) == 32
    assert len(s) == 2 and "x" in s and ("y", 1) in s
    assert s.total_nbytes == 37
    assert s.put("x", b"1") == 1  # replacing adjusts the total
    assert s.total_nbytes == 33
    assert s.get(["x"]) == {"x": b"1"}
    assert s.delete(["x", "nope"]) == ["x"]
    assert s.total_nbytes == 32
    assert s.keys() == [("y", 1)]
    assert s.snapshot() == ([("y", 1)], {("y", 1): 32})


def test_get_missing_names_keys():
    s = DataStore()
    s.update({"a": 1})
    with pytest.raises(KeyError, match="'b'.*'c'|'c'.*'b'"):
        s.get(["a", "b", "c"])
    assert s.get(["a", "b"], allow_missing=True) == {"a": 1}


def test_bad_arguments():
    s = DataStore()
    with pytest.raises(TypeError, match="hashable"):
        s.put(["list"], 1)
    with pytest.raises(TypeError, match="dict"):
        s.update([("a", 1)])
    with pytest.raises(TypeError, match="list of keys"):
        s.get("abc")
    with pytest.raises(TypeError, match="list of keys"):
        s.delete(5)
    with pytest.raises(TypeError, match="hashable"):
        check_keys([{"a": 1}])
    with pytest.raises(TypeError, match="hashable"):
        s.get([[1]])
    assert len(s) == 0


def test_failures_are_tracked():
    s = DataStore()
    try:
        1 / 0
    except ZeroDivisionError as e:
        f = Failure.from_exception(e)
    s.put("bad", f)
    assert s.failures == {"bad"}
    assert s.get(["bad"])["bad"] is f
    s.put("bad", 1)
    assert s.failures == set()
    s.put("bad", f)
    s.delete(["bad"])
    assert s.failures == set()


def test_missing():
    s = DataStore()
    s.update({"a": 1})
    assert s.missing(["a", "b", "b", "c"]) == ["b", "c"]


def test_substitute_nested():
    data = {"x": 1, ("y", 0): 2}
    args = ("x", ["x", ("y", 0), ("z", "x")], {"k": "x", "x": "keep-key-name"})
    assert substitute(args, data) == (1, [1, 2, ("z", 1)], {"k": 1, "x": "keep-key-name"})


def test_substitute_only_key_types_and_no_copy():
    data = {1: "one", "a": "A"}
    assert substitute([True, 1.0, 1, np.int64(1)], data)[:3] == [True, 1.0, "one"]
    untouched = ["b", ("c", [1.5]), {"d": np.arange(3)}]
    assert substitute(untouched, data) is untouched
    assert substitute(untouched, {}) is untouched
    arr = np.arange(3)
    assert substitute([arr, {1, 2}], data)[0] is arr


def test_substitute_tuple_key_with_unhashable_inside():
    assert substitute((["a"], "a"), {"a": 5}) == ([5], 5)


def test_batch_cancels_and_orders():
    b = ReportBatch(max_keys=3)
    b.add({"x": 1})
    b.remove(["x"])
    b.add({"y": 2})
    assert not b.full
    b.remove(["z"])
    assert b.full
    assert b.take() == [
        {"op": "remove_keys", "keys": ["x", "z"]},
        {"op": "add_keys", "keys": ["y"], "nbytes": {"y": 2}},
    ]
    assert b.take() == []
    b.remove(["x"])
    b.add({"x": 3})
    assert b.take() == [{"op": "add_keys", "keys": ["x"], "nbytes": {"x": 3}}]
    with pytest.raises(ValueError):
        ReportBatch(max_keys=0)
