"""Unit tests for CenterState: pure bookkeeping, no sockets."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distributed_center import CenterState

A = "tcp://127.0.0.1:1001"
B = "tcp://127.0.0.1:1002"
C = "tcp://127.0.0.1:1003"


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def s(clock):
    return CenterState(clock=clock)


def check_invariants(s: CenterState) -> None:
    """who_has, has_what, nbytes and per-worker totals all agree."""
    derived: dict = {}
    for address, keys in s.has_what_map.items():
        assert address in s.workers_map
        for key in keys:
            derived.setdefault(key, set()).add(address)
    assert set(s.has_what_map) == set(s.workers_map)
    assert set(derived) == set(s.who_has_map)
    for key, holders in s.who_has_map.items():
        if isinstance(holders, str):
            assert derived[key] == {holders}
        else:
            assert len(holders) >= 2, "a one-holder entry must be stored as a str"
            assert derived[key] == holders
    assert set(s.nbytes_map) <= set(s.who_has_map)
    for address, info in s.workers_map.items():
        expected = sum(s.nbytes_map.get(k, 0) for k in s.has_what_map[address])
        assert info.nbytes == expected


def test_register_and_query(s):
    assert s.register(A, keys=["x", "y"], ncores=4, name="alice", nbytes={"x": 10})
    assert s.who_has(["x", "y", "z"]) == {"x": [A], "y": [A], "z": []}
    assert s.who_has() == {"x": [A], "y": [A]}
    assert {k: sorted(v) for k, v in s.has_what().items()} == {A: ["x", "y"]}
    assert s.has_what([B]) == {B: []}
    assert s.ncores() == {A: 4}
    assert s.ncores([A, B]) == {A: 4, B: 0}
    assert s.nbytes() == {"x": 10}
    assert s.nbytes(["x", "y", "nope"]) == {"x": 10}
    info = s.workers()[A]
    assert info["name"] == "alice"
    assert info["ncores"] == 4
    assert info["nkeys"] == 2
    assert info["nbytes"] == 10
    assert abs(info["last_seen"] - time.time()) < 5
    assert s.n_workers == 1 and s.n_keys == 2
    check_invariants(s)


def test_keys_of_every_msgpack_type(s):
    keys = ["s", b"b", 7, ("x", 1), ("y", (2, b"z")), -3, 1.5]
    s.register(A, keys=keys)
    assert s.who_has(keys) == {k: [A] for k in keys}
    check_invariants(s)


def test_nbytes_keys_count_as_held(s):
    s.register(A, nbytes={"x": 5})
    assert s.who_has(["x"]) == {"x": [A]}
    assert s.workers()[A]["nbytes"] == 5


def test_several_holders(s):
    s.register(A, keys=["x"], nbytes={"x": 8})
    s.register(B, keys=["x", "y"])
    assert s.who_has(["x"]) == {"x": sorted([A, B])}
    assert isinstance(s.who_has_map["x"], set)
    assert s.workers()[B]["nbytes"] == 8  # size known from A
    check_invariants(s)
    lost = s.remove_keys(A, ["x"])
    assert lost == []
    assert s.who_has_map["x"] == B and isinstance(s.who_has_map["x"], str)
    assert s.nbytes(["x"]) == {"x": 8}
    lost = s.remove_keys(B, ["x"])
    assert lost == ["x"]
    assert s.who_has(["x"]) == {"x": []}
    assert s.nbytes(["x"]) == {}
    check_invariants(s)


def test_single_holder_value_is_the_shared_address_string(s):
    port = 1001
    first = f"tcp://127.0.0.1:{port}"  # built at run time: distinct str objects
    second = f"tcp://127.0.0.1:{port}"
    assert first is not second
    s.register(first, keys=["x"])
    s.add_keys(second, ["y"])
    assert s.who_has_map["x"] is s.who_has_map["y"]


def test_nbytes_update_follows_all_holders(s):
    s.register(A, keys=["x"])
    s.register(B, keys=["x"])
    s.add_keys(A, [], nbytes={"x": 100})
    assert s.workers()[A]["nbytes"] == 100
    assert s.workers()[B]["nbytes"] == 100
    s.add_keys(B, ["x"], nbytes={"x": 40})
    assert s.workers()[A]["nbytes"] == 40
    check_invariants(s)


def test_add_keys_is_idempotent(s):
    s.register(A)
    s.add_keys(A, ["x", "x"], nbytes={"x": 3})
    s.add_keys(A, ["x"], nbytes={"x": 3})
    assert s.has_what() == {A: ["x"]}
    assert s.workers()[A]["nbytes"] == 3
    check_invariants(s)


def test_add_keys_unknown_worker_is_a_clear_error(s):
    with pytest.raises(ValueError, match="not registered.*register it again"):
        s.add_keys(A, ["x"])
    assert s.who_has_map == {}


def test_remove_keys_ignores_unknown(s):
    assert s.remove_keys(A, ["x"]) == []
    s.register(A, keys=["x"])
    assert s.remove_keys(A, ["y"]) == []
    check_invariants(s)


def test_unregister(s):
    s.register(A, keys=["x", "y"], nbytes={"x": 1, "y": 2})
    s.register(B, keys=["y"])
    lost = s.unregister(A)
    assert lost == ["x"]
    assert s.who_has(["x", "y"]) == {"x": [], "y": [B]}
    assert s.nbytes() == {"y": 2}
    assert A not in s.workers() and A not in s.has_what()
    assert s.unregister(A) == []
    check_invariants(s)


def test_reregister_replaces_keys(s, clock):
    s.register(A, keys=["x", "y"], ncores=1, nbytes={"x": 1, "y": 2})
    clock.now += 3
    assert s.register(A, keys=["y", "z"], ncores=2, name="new") is False
    assert sorted(s.has_what()[A]) == ["y", "z"]
    assert s.who_has(["x"]) == {"x": []}
    assert s.ncores() == {A: 2}
    assert s.workers()[A]["name"] == "new"
    assert s.workers_map[A].last_seen == clock.now
    check_invariants(s)


def test_reregister_with_same_keys_after_restart_style(s):
    keys = [("k", i) for i in range(100)]
    s.register(A, keys=keys)
    s.register(A, keys=keys)
    assert s.n_keys == 100
    check_invariants(s)


def test_delete_keys(s):
    s.register(A, keys=["x", "y"], nbytes={"x": 1})
    s.register(B, keys=["x", "z"])
    by_holder = s.delete_keys(["x", "y", "unknown"])
    assert {a: sorted(k) for a, k in by_holder.items()} == {A: ["x", "y"], B: ["x"]}
    assert s.who_has() == {"z": [B]}
    assert s.nbytes() == {}
    check_invariants(s)


def test_heartbeat_and_staleness(s, clock):
    s.register(A)
    s.register(B)
    clock.now += 4
    assert s.heartbeat(A, {"memory": 123})
    assert s.workers()[A]["metrics"] == {"memory": 123}
    assert s.stale_workers(5) == []
    clock.now += 2
    assert s.stale_workers(5) == [B]
    s.touch(B)
    s.touch(C)  # unknown: ignored
    assert s.stale_workers(5) == []
    assert not s.heartbeat(C)


def test_heartbeats_due_each_interval(s, clock):
    s.register(A)
    clock.now += 0.5
    s.register(B)
    assert s.heartbeats_due(1.0) == []
    clock.now += 0.5
    assert s.heartbeats_due(1.0) == [A]
    s.heartbeat_sent(A)
    s.heartbeat_sent(C)  # unknown: ignored
    assert s.heartbeats_due(1.0) == []
    clock.now += 0.5
    assert s.heartbeats_due(1.0) == [B]
    # what the center sends says nothing about the worker being alive
    assert s.stale_workers(0.9) == [A, B]


def test_excuse_a_paused_center(s, clock):
    s.register(A)
    clock.now += 2
    s.register(B)
    clock.now += 60  # the center was stopped for a minute
    assert s.stale_workers(5) == [A, B]
    s.excuse(60)
    assert s.stale_workers(5) == []
    assert s.workers_map[A].last_seen == clock.now - 2
    assert s.workers_map[B].last_seen == clock.now  # never in the future
    s.excuse(0)
    s.excuse(-3)
    assert s.workers_map[A].last_seen == clock.now - 2
    clock.now += 3.5
    assert s.stale_workers(5) == [A]  # a worker that really went silent is still dropped


def test_dropped_worker_reregisters_after_heal_with_what_it_still_holds(s, clock):
    # A and B both hold "shared"; A is partitioned away and dropped
    s.register(A, keys=["shared", "a1", "a2"], nbytes={"a1": 10})
    s.register(B, keys=["shared", "b1"])
    clock.now += 6
    s.heartbeat(B)
    assert s.stale_workers(5) == [A]
    assert sorted(s.unregister(A)) == ["a1", "a2"]
    assert s.who_has(["shared", "a1"]) == {"shared": [B], "a1": []}
    # meanwhile "a1" was recomputed on B; A lost "a2" while away (deleted)
    s.add_keys(B, ["a1"])
    clock.now += 10
    assert s.register(A, keys=["shared", "a1"], nbytes={"a1": 10}) is True
    assert s.who_has(["shared", "a1", "a2"]) == {
        "shared": [A, B],
        "a1": [A, B],
        "a2": [],
    }
    assert s.n_workers == 2
    check_invariants(s)


def test_reregistration_while_still_listed_replaces_not_merges(s, clock):
    # the center never noticed A was gone (its old stream is half-open)
    s.register(A, keys=["x", "y", "z"], nbytes={"x": 1, "y": 2, "z": 3})
    clock.now += 1
    assert s.register(A, keys=["y"], nbytes={"y": 2}, ncores=4) is False
    assert s.has_what() == {A: ["y"]}
    assert s.who_has(["x", "z"]) == {"x": [], "z": []}
    assert s.ncores() == {A: 4}
    assert list(s.workers()) == [A]  # listed once
    assert s.workers_map[A].nbytes == 2
    check_invariants(s)


def test_activity_counts_as_life(s, clock):
    s.register(A)
    clock.now += 10
    s.add_keys(A, ["x"])
    assert s.stale_workers(5) == []
    clock.now += 10
    s.remove_keys(A, ["x"])
    assert s.stale_workers(5) == []


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda s: s.register(5), "address must be a non-empty string"),
        (lambda s: s.register(""), "address must be a non-empty string"),
        (lambda s: s.register(A, keys="xyz"), "wrap a single key in a list"),
        (lambda s: s.register(A, keys=[["unhashable"]]), "not hashable"),
        (lambda s: s.register(A, ncores=0), "ncores must be a positive int"),
        (lambda s: s.register(A, ncores="2"), "ncores must be a positive int"),
        (lambda s: s.register(A, ncores=True), "ncores must be a positive int"),
        (lambda s: s.register(A, name=[1]), "name must be"),
        (lambda s: s.register(A, nbytes=[1]), "nbytes must be a dict"),
        (lambda s: s.register(A, nbytes={"x": -1}), "non-negative int"),
        (lambda s: s.register(A, nbytes={"x": "big"}), "non-negative int"),
        (lambda s: s.who_has(5), "keys must be a list"),
        (lambda s: s.who_has([{"a": 1}]), "not hashable"),
        (lambda s: s.has_what(A), "wrap a single address in a list"),
        (lambda s: s.ncores([1]), "address strings"),
        (lambda s: s.nbytes("x"), "keys must be a list"),
        (lambda s: s.delete_keys(3), "keys must be a list"),
        (lambda s: s.remove_keys(A, 3), "keys must be a list"),
    ],
)
def test_bad_arguments(s, call, match):
    s.register(B, keys=["b"])
    before = (dict(s.who_has_map), {a: set(k) for a, k in s.has_what_map.items()})
    with pytest.raises(TypeError, match=match):
        call(s)
    after = (dict(s.who_has_map), {a: set(k) for a, k in s.has_what_map.items()})
    assert before == after


def test_bad_register_leaves_known_worker_untouched(s):
    s.register(A, keys=["x"], ncores=2)
    with pytest.raises(TypeError):
        s.register(A, keys=["y", ["bad"]], ncores=3)
    assert s.has_what() == {A: ["x"]}
    assert s.ncores() == {A: 2}


def test_sets_and_tuples_of_keys_accepted(s):
    s.register(A, keys={"x", "y"})
    s.add_keys(A, ("z",))
    s.remove_keys(A, frozenset(["x"]))
    assert sorted(s.has_what()[A]) == ["y", "z"]
    assert s.who_has({"z": None}) == {"z": [A]}  # a dict means its keys


def test_repr(s):
    s.register(A, keys=["x"])
    assert "workers=1" in repr(s) and "keys=1" in repr(s)
    assert A in repr(s.workers_map[A])


# ---------------------------------------------------------------- property test

addresses = st.sampled_from([A, B, C])
keys_st = st.lists(st.sampled_from(["a", "b", "c", ("t", 1), 5, b"x"]), max_size=4)
sizes = st.dictionaries(
    st.sampled_from(["a", "b", "c", ("t", 1)]), st.integers(0, 1000), max_size=3
)
ops = st.one_of(
    st.tuples(st.just("register"), addresses, keys_st, sizes),
    st.tuples(st.just("unregister"), addresses),
    st.tuples(st.just("add_keys"), addresses, keys_st, sizes),
    st.tuples(st.just("remove_keys"), addresses, keys_st),
    st.tuples(st.just("delete_keys"), keys_st),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(ops, max_size=30))
def test_random_operations_keep_tables_consistent(operations):
    s = CenterState()
    model: dict[str, set] = {}  # address -> keys, the obvious model
    for op, *args in operations:
        if op == "register":
            address, keys, nb = args
            s.register(address, keys=keys, nbytes=nb)
            model[address] = set(keys) | set(nb)
        elif op == "unregister":
            s.unregister(args[0])
            model.pop(args[0], None)
        elif op == "add_keys":
            address, keys, nb = args
            if address not in model:
                with pytest.raises(ValueError):
                    s.add_keys(address, keys, nbytes=nb)
                continue
            s.add_keys(address, keys, nbytes=nb)
            model[address] |= set(keys) | set(nb)
        elif op == "remove_keys":
            address, keys = args
            s.remove_keys(address, keys)
            if address in model:
                model[address] -= set(keys)
        elif op == "delete_keys":
            s.delete_keys(args[0])
            for held in model.values():
                held -= set(args[0])
        check_invariants(s)
        assert {a: set(k) for a, k in s.has_what().items()} == model


def test_one_key_object_per_key(s):
    # Over the wire, ``keys`` and ``nbytes`` decode into distinct equal objects.
    n = 7
    keys = [f"key-{n}", (f"t-{n}", n)]
    nbytes = {f"key-{n}": 1, (f"t-{n}", n): 2}
    assert next(iter(nbytes)) is not keys[0]
    s.register(A, keys=keys, nbytes=nbytes)
    for key in keys:
        stored = [k for k in s.who_has_map if k == key]
        assert [k for k in s.nbytes_map if k == key][0] is stored[0]
        assert [k for k in s.has_what_map[A] if k == key][0] is stored[0]


def test_memory_per_key_is_small():
    import tracemalloc
    import uuid

    n = 20_000
    batches = []
    for _ in range(n // 1000):
        keys = [f"inc-{uuid.uuid4().hex}" for _j in range(1000)]
        # distinct-but-equal objects, as decoding a message produces
        sizes = {"".join([k[:2], k[2:]]): 1000 + j for j, k in enumerate(keys)}
        batches.append((keys, sizes))
    del keys, sizes
    s = CenterState()
    s.register(A)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for keys, sizes in batches:
            s.add_keys(A, keys, nbytes=sizes)
        del batches, keys, sizes
        per_key = (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()
    # benchmarks/center_memory.py measures the same over the wire (~250 B/key)
    assert per_key < 400, per_key
