"""Encoding without I/O: exact round trips, out-of-band frames, refusals."""

from __future__ import annotations

import math
import pickle
import threading

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distributed_core import DecodeError, LocalProtocolError, dumps, loads
from distributed_core.serialize import (
    EXT_BUFFER,
    EXT_PICKLE,
    EXT_TUPLE,
    OOB_THRESHOLD,
)


def canon(x):
    """A comparable form of ``x`` that keeps every type (1 != True != 1.0, () != [])."""
    t = type(x)
    if t is float:
        return ("float", repr(x))  # nan == nan, -0.0 != 0.0
    if t in (list, tuple):
        return (t.__name__, [canon(i) for i in x])
    if t is dict:
        return ("dict", [(canon(k), canon(v)) for k, v in x.items()])
    if t in (set, frozenset):
        return (t.__name__, sorted((canon(i) for i in x), key=repr))
    if t in (bytes, bytearray):
        return (t.__name__, bytes(x))
    return (t.__name__, x)


def roundtrip(msg, **kwargs):
    return loads(dumps(msg), **kwargs)


def assert_same(a, b):
    assert canon(a) == canon(b)


class Point:  # a user class: travels pickled, by reference
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return type(other) is Point and (self.x, self.y) == (other.x, other.y)

    def __hash__(self):
        return hash((self.x, self.y))


class CustomError(Exception):
    pass


ROUNDTRIP = [
    None,
    True,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    2**64,
    -(2**63) - 1,
    2**200,
    1.5,
    float("inf"),
    float("nan"),
    -0.0,
    "",
    "héllo ✓",
    b"",
    b"\x00\xff",
    bytearray(b"abc"),
    [],
    (),
    (1,),
    [1, (2, [3, (4,)])],
    ((1, 2), (3, (4, 5))),
    {"a": 1, "b": [1, 2]},
    {1: "int key", -5: None},
    {b"k": 1, ("x", 0): 2, (("nested", 1), 2): 3, 1.5: 4, None: 5, True: 6},
    {("x", 0): [("y", 1), ("z", 2)]},
    {frozenset({1, 2}): "frozenset key"},
    {1, 2, 3},
    {(1, 2), "a", b"b"},
    frozenset({1, frozenset({2})}),
    set(),
    [set(), frozenset(), (), [], {}],
    {"op": "compute", "args": (1, (2, 3)), "kwargs": {"k": {4, 5}}},
    Point(1, 2),
    {Point(1, 2): [Point(3, 4)], ("k",): Point(5, 6)},
]


@pytest.mark.parametrize(
    "msg",
    ROUNDTRIP,
    # stable ids (reprs of sets and objects change from run to run)
    ids=[f"{i}-{type(m).__name__}" for i, m in enumerate(ROUNDTRIP)],
)
def test_roundtrip_exact(msg):
    assert_same(roundtrip(msg), msg)


def test_tuple_keys_stay_tuples():
    graph = {("x", 0): (sum, [("y", 0), ("y", 1)]), ("y", 0): 1, ("y", 1): 2}
    out = roundtrip(graph)
    assert list(out) == [("x", 0), ("y", 0), ("y", 1)]
    assert all(type(k) is tuple for k in out)
    assert out[("x", 0)][0] is sum
    assert type(out[("x", 0)][1]) is list
    assert type(out[("x", 0)][1][0]) is tuple


@pytest.mark.parametrize("size", [0, 10, OOB_THRESHOLD - 1, OOB_THRESHOLD, 10 * OOB_THRESHOLD])
@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_bytes_like_in_band_and_out_of_band(kind, size):
    raw = bytes(range(256)) * (size // 256) + bytes(size % 256)
    value = kind(raw) if kind is not memoryview else memoryview(bytearray(raw))
    frames = dumps({"data": value})
    if size >= OOB_THRESHOLD or kind is bytearray:  # bytearrays always, to keep their type
        assert len(frames) == 2
        assert memoryview(frames[1]).nbytes == size
        if kind is memoryview:
            assert memoryview(frames[1]).obj is value.obj  # the same memory, not a copy
        else:
            assert frames[1] is value  # not copied
        assert len(frames[0]) < 100
    else:
        assert type(frames[0]) is bytes
        assert len(frames) == 1
    out = loads(frames)["data"]
    expected_type = bytes if kind is memoryview else kind
    assert type(out) is expected_type
    assert out == raw


def test_memoryview_formats_and_non_contiguous():
    arr = np.arange(OOB_THRESHOLD, dtype="int32")
    mv = memoryview(arr)
    out = roundtrip(mv)
    assert type(out) is bytes and out == arr.tobytes()
    strided = memoryview(arr)[::2]
    assert not strided.c_contiguous
    assert roundtrip(strided) == arr[::2].tobytes()
    small = memoryview(b"abcdef")[1:4]
    assert roundtrip(small) == b"bcd"


def test_out_of_band_frames_are_referenced_from_frame_0():
    big = [b"a" * OOB_THRESHOLD, bytearray(b"b" * OOB_THRESHOLD), b"c" * OOB_THRESHOLD]
    frames = dumps({"x": big, "y": (big[0],)})
    assert len(frames) == 5
    out = loads(frames)
    assert out["x"] == big and type(out["x"][1]) is bytearray
    assert out["y"] == (big[0],)


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(10),
        np.arange(200_000, dtype="float64").reshape(400, 500),
        np.asfortranarray(np.ones((300, 200))),
        np.zeros(0, dtype="int8"),
        np.array(["a", "bc"], dtype=object),
        np.arange(100_000)[::3],  # non-contiguous
    ],
    ids=["small", "2d", "fortran", "empty", "object", "strided"],
)
def test_numpy_roundtrip(arr):
    out = roundtrip(arr)
    assert type(out) is np.ndarray
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("order", ["C", "F"])
def test_numpy_sent_without_copy(order):
    arr = np.asarray(np.arange(1_000_000, dtype="float64").reshape(1000, 1000), order=order)
    frames = dumps({"array": arr})
    views = [f for f in frames[1:] if np.shares_memory(np.frombuffer(f, dtype="uint8"), arr)]
    assert len(views) == 1, "the array's buffer should be a frame viewing its memory"
    assert memoryview(views[0]).nbytes == arr.nbytes
    assert len(frames[0]) < 1000  # only the pickled header is in band
    out = loads(frames)["array"]
    np.testing.assert_array_equal(out, arr)
    assert out.flags.f_contiguous == (order == "F")


def test_functions_lambdas_and_closures():
    y = 10

    def closure(x):
        return x + y

    out = roundtrip({"f": closure, "g": lambda x: x * 2, "h": math.sqrt, "cls": Point})
    assert out["f"](1) == 11
    assert out["g"](4) == 8
    assert out["h"] is math.sqrt
    assert out["cls"] is Point


@pytest.mark.parametrize(
    "exc", [ValueError("bad value"), KeyError("k"), CustomError("custom", 1), OSError(2, "nope")]
)
def test_exceptions(exc):
    out = roundtrip(exc)
    assert type(out) is type(exc)
    assert out.args == exc.args


def test_user_objects_and_numpy_scalars_keep_their_type():
    msg = [Point(1, 2), np.float64(1.5), np.int64(3), np.bool_(True)]
    out = roundtrip(msg)
    assert out == msg
    assert [type(x) for x in out] == [type(x) for x in msg]


@pytest.mark.parametrize(
    "msg",
    [lambda: 1, np.arange(3), {"nested": [Point(1, 2)]}, {Point(1, 2)}, 2**70],
    ids=["lambda", "numpy", "nested-object", "object-in-set", "bigint"],
)
def test_loads_without_pickle_refuses_pickled_values(msg):
    frames = dumps(msg)
    with pytest.raises(DecodeError, match="refusing to unpickle"):
        loads(frames, allow_pickle=False)


def test_loads_without_pickle_accepts_plain_messages():
    msg = {"a": (1, {2}), "b": frozenset([b"x"]), "c": b"y" * OOB_THRESHOLD}
    assert_same(loads(dumps(msg), allow_pickle=False), msg)


def ext(code, payload) -> bytes:
    return msgpack.packb(msgpack.ExtType(code, payload))


@pytest.mark.parametrize(
    "frames, match",
    [
        ([b""], "could not decode"),
        ([b"\xc1"], "could not decode"),  # a byte msgpack never uses
        ([b"\x92\x01"], "could not decode"),  # truncated array
        ([b"\x01\x02"], "could not decode"),  # extra data
        ([b"\xdd\xff\xff\xff\xff"], "could not decode"),  # array of 4 billion items, no data
        ([ext(99, b"")], "unknown msgpack extension type 99"),
        ([ext(EXT_TUPLE, b"\xc1")], "could not decode"),
        ([ext(EXT_TUPLE, msgpack.packb(5))], "could not decode"),
        ([ext(EXT_BUFFER, msgpack.packb([1, 0]))], "refers to frame 1, but it has 1 frames"),
        ([ext(EXT_BUFFER, msgpack.packb([0, 0])), b"x"], "refers to frame 0"),
        ([ext(EXT_BUFFER, msgpack.packb(["1", 0])), b"x"], "refers to frame '1'"),
        ([ext(EXT_BUFFER, msgpack.packb([1])), b"x"], "could not decode"),
        ([ext(EXT_PICKLE, msgpack.packb([b"not a pickle", []]))], "could not decode"),
        ([ext(EXT_PICKLE, msgpack.packb([7, []]))], "refers to frame 7"),
        ([msgpack.packb({(1, 2): 3}, use_bin_type=True)], None),  # list keys are unhashable
        ([b"\x81\x90\x01"], "could not decode"),  # {[]: 1}
    ],
    ids=lambda v: repr(v)[:40] if isinstance(v, list) else None,
)
def test_garbage_raises_decode_error(frames, match):
    with pytest.raises(DecodeError, match=match):
        loads(frames)


def test_unserializable_names_the_type():
    with pytest.raises(LocalProtocolError, match=r"_thread\.lock") as info:
        dumps({"x": [threading.Lock()]})
    assert "cannot serialize" in str(info.value)

    def gen():
        yield 1

    with pytest.raises(LocalProtocolError, match="generator"):
        dumps(gen())


def test_deep_nesting_of_lists_is_a_local_error():
    x = []
    for _ in range(5000):
        x = [x]
    with pytest.raises(LocalProtocolError):
        dumps(x)


@pytest.mark.parametrize("depth", [10, 31, 32, 33, 100, 500])
@pytest.mark.parametrize("kind", [tuple, frozenset])
def test_deep_nesting_of_tuples_roundtrips(kind, depth):
    x = ()
    for i in range(depth):
        x = kind([i, x])
    assert roundtrip(x) == x


@pytest.mark.parametrize("depth", [33, 200, 2000, 10_000])
def test_deeply_nested_extension_types_are_refused_not_a_crash(depth):
    # Each nested extension type costs ~45 KB of C stack in msgpack; a
    # crafted message used to crash the process (segfault).
    data = msgpack.packb([])
    for _ in range(depth):
        data = ext(EXT_TUPLE, data)
    with pytest.raises(DecodeError, match="nested"):
        loads([data], allow_pickle=False)


def test_loads_accepts_any_frame_types():
    frames = dumps({"b": b"x" * OOB_THRESHOLD, "a": np.arange(5)})
    as_received = [bytes(frames[0])] + [bytearray(memoryview(f).cast("B")) for f in frames[1:]]
    out = loads(as_received)
    assert out["b"] == b"x" * OOB_THRESHOLD and type(out["b"]) is bytes
    np.testing.assert_array_equal(out["a"], np.arange(5))


def test_pickle_dumps_prefers_plain_pickle():
    from distributed_core.serialize import pickle_dumps, pickle_loads

    data = pickle_dumps(Point(1, 2))
    assert pickle_loads(data) == Point(1, 2)
    assert pickle.loads(data) == Point(1, 2)


def test_pickle_dumps_follows_register_pickle_by_value(tmp_path, monkeypatch):
    # data (not only functions) of a module registered by value goes by
    # value, so a process that cannot import the module can load it
    import subprocess
    import sys
    import uuid

    import cloudpickle

    from distributed_core.serialize import pickle_dumps

    name = f"pbv_core_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        "class P:\n    def __init__(self, x):\n        self.x = x\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__(name)
    try:
        by_reference = pickle_dumps(module.P(7))
        cloudpickle.register_pickle_by_value(module)
        try:
            by_value = pickle_dumps(module.P(7))
        finally:
            cloudpickle.unregister_pickle_by_value(module)
        assert pickle_dumps(module.P(7)) == by_reference  # unregistered: by reference again
    finally:
        sys.modules.pop(name, None)
    load = "import pickle, sys; print(pickle.loads(sys.stdin.buffer.read()).x)"
    elsewhere = [sys.executable, "-c", load]  # a fresh process without tmp_path on sys.path
    ok = subprocess.run(elsewhere, input=by_value, capture_output=True, timeout=60)
    assert ok.stdout.strip() == b"7", ok.stderr
    bad = subprocess.run(elsewhere, input=by_reference, capture_output=True, timeout=60)
    assert b"No module named" in bad.stderr


# -- property test ------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
hashables = st.recursive(
    scalars,
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)


def containers(inner):
    return (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(hashables, inner, max_size=4)
        | st.sets(hashables, max_size=4)
        | st.frozensets(hashables, max_size=4)
        | st.binary(max_size=20).map(bytearray)
        # large values go out of band; generating 64 KB of random bytes is slow
        | st.builds(
            lambda n, c: c * n,
            st.sampled_from([OOB_THRESHOLD, OOB_THRESHOLD + 7]),
            st.sampled_from([b"x", b"\x00"]),
        )
        | st.builds(lambda n: bytearray(n), st.sampled_from([OOB_THRESHOLD, OOB_THRESHOLD + 7]))
    )


messages = st.recursive(scalars | hashables, containers, max_leaves=20)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_roundtrip_property(msg):
    frames = dumps(msg)
    assert_same(loads(frames), msg)
    # frames are bytes-like and survive being copied into fresh buffers, as on the wire
    copied = [bytes(memoryview(f).cast("B")) for f in frames]
    assert_same(loads(copied), msg)
