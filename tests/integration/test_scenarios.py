"""What a user does with a running cluster, given only its center's address.

The ``center_address`` fixture is a cluster (a center and 2 workers) started
from the CLIs once per session, or an external one named by
``DISTRIBUTED_TEST_CENTER``; nothing here starts, stops or kills processes, so
the same scenarios can run against a mixed-version cluster.

Functions sent to the workers are lambdas, builtins or ``operator``
functions: a function defined at module level here would be pickled by
reference to this test module, which the worker processes cannot import.
"""

from __future__ import annotations

import functools
import inspect
import operator
import uuid

import pytest

from distributed_client import (
    Executor,
    Pool,
    RemoteData,
    as_completed,
    delete,
    gather,
    get,
    scatter,
    wait,
)


def held_keys(call, center_address) -> dict:
    """{key: [workers]} from the workers themselves (the center hears of keys a few ms late)."""
    held: dict = {}
    for worker in call(center_address, "workers"):
        for key in call(worker, "keys"):
            held.setdefault(key, []).append(worker)
    return held


@pytest.fixture(autouse=True)
def leaves_no_data(center_address, rpc_client, wait_for):
    """Each scenario must leave the cluster as it found it: no keys held."""
    call = rpc_client.call
    before = set(held_keys(call, center_address))
    yield
    left: dict = {}

    def nothing_left():
        left.clear()
        left.update({k: v for k, v in held_keys(call, center_address).items() if k not in before})
        return not left

    try:
        wait_for(nothing_left, timeout=5, what="the scenario's data is deleted")
    except AssertionError:
        raise AssertionError(f"keys left on the cluster by the scenario: {left}") from None


def two_workers(rpc_client, center_address) -> tuple[str, str]:
    workers = sorted(rpc_client.call(center_address, "workers"))
    assert len(workers) >= 2, f"the scenarios need a cluster with 2 workers, got {workers}"
    return workers[0], workers[1]


# --------------------------------------------------------------------------- wire level


def test_design_example_across_three_processes(center_address, rpc_client, wait_for):
    """client: Hey Alice! Compute z <- add(x, a)  -- where a lives only on Bob."""
    call = rpc_client.call
    alice, bob = two_workers(rpc_client, center_address)
    tag = uuid.uuid4().hex[:8]
    x, a, z = f"x-{tag}", f"a-{tag}", f"z-{tag}"
    try:
        # scatter, as three terminals would: x to Alice, a to Bob
        assert call(alice, "update_data", data={x: 1})["keys"] == [x]
        assert call(bob, "update_data", data={a: 10})["keys"] == [a]
        # the center knows both before update_data returns
        assert call(center_address, "who_has", keys=[x, a]) == {x: [alice], a: [bob]}

        reply = call(
            alice,
            "compute",
            function=operator.add,
            key=z,
            args=(x, a),
            needed=[x, a],
        )
        assert reply["status"] == "OK", reply
        assert reply["key"] == z and reply["type"] == "int"
        assert "result" not in reply  # metadata only, never the value

        # Alice: Hey Client! I've computed z and am holding on to it!
        assert sorted(call(alice, "keys")) == sorted([x, z])
        # Alice: Hey Center! I have z!
        wait_for(
            lambda: call(center_address, "who_has", keys=[z]) == {z: [alice]},
            what="the center lists z on Alice",
        )
        # Bob still has a (Alice fetched a copy to compute, and did not keep it)
        assert call(bob, "keys") == [a]
        assert call(center_address, "who_has", keys=[a]) == {a: [bob]}
        assert call(alice, "get_data", keys=[z]) == {z: 11}
        has_what = call(center_address, "has_what", workers=[alice, bob])
        assert {w: sorted(keys) for w, keys in has_what.items()} == {alice: [x, z], bob: [a]}
    finally:
        assert call(center_address, "delete_data", keys=[x, a, z]) == "OK"
    assert call(alice, "keys") == [] and call(bob, "keys") == []


# --------------------------------------------------------------------------- scatter / gather


def test_scatter_and_gather(center_address):
    remote = scatter(center_address, [1, "two", [3.0], {"four": 4}])
    try:
        assert all(isinstance(r, RemoteData) for r in remote)
        assert gather(center_address, remote) == [1, "two", [3.0], {"four": 4}]
        assert remote[1].get() == "two"
        assert gather(center_address, [r.key for r in remote][::-1])[0] == {"four": 4}
    finally:
        delete(center_address, [r.key for r in remote])
    with pytest.raises(KeyError, match=remote[0].key):
        gather(center_address, [remote[0].key])


def test_scatter_dict_spreads_over_workers(center_address, rpc_client):
    tag = uuid.uuid4().hex[:8]
    data = {f"{tag}-{i}": i * i for i in range(20)}
    remote = scatter(center_address, data)
    try:
        assert set(remote) == set(data)
        who_has = rpc_client.call(center_address, "who_has", keys=list(data))
        holders = {w for ws in who_has.values() for w in ws}
        assert len(holders) >= 2, who_has
        assert gather(center_address, remote) == data
    finally:
        delete(center_address, list(data))


# --------------------------------------------------------------------------- Pool

#: ``Pool.map``/``apply`` return values since issue 10 (RemoteData before, now
#: ``remote=True``); the scenarios also run with a client of the previous
#: release (``nox -s compat``), so they ask for RemoteData in a way both accept
#: and take values either way.
REMOTE = {"remote": True} if "remote" in inspect.signature(Pool.map).parameters else {}


def values(pool, result):
    """The value(s) of what a Pool call returned, RemoteData (old client) or not."""
    if isinstance(result, RemoteData):
        return result.get()
    if isinstance(result, list) and any(isinstance(r, RemoteData) for r in result):
        return pool.gather(result)
    return result


def test_pool_quickstart(center_address):
    with Pool(center_address) as pool:
        A = pool.map(lambda x: x**2, range(10), **REMOTE)  # results stay on the workers
        B = pool.map(lambda x: -x, A, **REMOTE)  # ... and are used where they are
        assert values(pool, pool.apply(sum, [B])) == -285
        assert pool.gather(A) == [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]


def test_pool_apply_async_scatter_and_errors(center_address):
    with Pool(center_address) as pool:
        data = pool.scatter([10, 20, 30])
        result = pool.apply_async(lambda *xs: sum(xs), data)
        assert values(pool, result.get(timeout=10)) == 60
        assert result.ready() and result.successful()
        with pytest.raises(ZeroDivisionError):
            pool.map(lambda x: 1 / x, [1, 0, 2])
        # the pool keeps working after a task raised
        assert values(pool, pool.map(len, ["a", "bb"])) == [1, 2]


@pytest.mark.skipif(not REMOTE, reason="a client from before issue 10 (Pool gave RemoteData)")
def test_pool_multiprocessing_semantics(center_address):
    from multiprocessing.pool import ThreadPool

    with Pool(center_address) as pool, ThreadPool(2) as local:
        args = [(2, 3), (3, 2)]
        assert pool.map(abs, range(-5, 5), chunksize=3) == local.map(abs, range(-5, 5))
        assert pool.starmap(pow, args) == local.starmap(pow, args)
        assert list(pool.imap(abs, range(-5, 5), 2)) == list(local.imap(abs, range(-5, 5), 2))
        assert sorted(pool.imap_unordered(abs, range(-3, 3))) == [0, 1, 1, 2, 2, 3]
        assert pool.map_async(abs, [-1, -2]).get(timeout=10) == [1, 2]


# --------------------------------------------------------------------------- get


def test_get_dict_graph(center_address):
    dsk = {
        "x": 1,
        "y": (operator.add, "x", 10),
        ("z", 0): (sum, ["x", "y", (operator.add, "y", 1)]),
    }
    assert get(center_address, dsk, [("z", 0), "y"]) == [24, 11]
    assert get(center_address, dsk, "y") == 11
    assert get(center_address, dsk, [["x"], [("z", 0)]]) == [[1], [24]]


def test_get_error_propagates(center_address):
    dsk = {"a": 0, "b": (operator.truediv, 1, "a"), "c": (operator.add, "b", 1)}
    with pytest.raises(ZeroDivisionError):
        get(center_address, dsk, "c")


# --------------------------------------------------------------------------- Executor


def test_executor_submit_map_gather(center_address):
    with Executor(center_address) as e:
        f = e.submit(operator.add, 1, 2)
        assert f.result(timeout=10) == 3
        g = e.submit(operator.mul, f, 10)  # a future as an argument stays on the cluster
        assert g.result(timeout=10) == 30

        futures = e.map(lambda x: x + 1, range(20))
        assert e.gather(futures) == list(range(1, 21))
        total = e.submit(sum, futures)
        assert total.result(timeout=10) == sum(range(1, 21))
        assert sorted(f.result() for f in as_completed(futures)) == list(range(1, 21))

        [remote] = e.scatter([list(range(5))])
        assert e.submit(len, remote).result(timeout=10) == 5

        bad = e.submit(operator.truediv, 1, 0)
        done, not_done = wait([bad, total], timeout=10)
        assert not not_done
        assert isinstance(bad.exception(), ZeroDivisionError)
        with pytest.raises(ZeroDivisionError):
            bad.result()
        with pytest.raises(ZeroDivisionError):
            e.submit(operator.neg, bad).result(timeout=10)  # dependents fail the same way


# --------------------------------------------------------------------------- dask


def test_dask_array_compute(center_address):
    dask = pytest.importorskip("dask")
    da = pytest.importorskip("dask.array")
    np = pytest.importorskip("numpy")
    scheduler = functools.partial(get, center_address)

    x = da.arange(400, chunks=50).reshape((20, 20)).rechunk((5, 5))
    y = (x + x.T).sum(axis=0) - x.mean()
    expected = (np.arange(400).reshape((20, 20)) + np.arange(400).reshape((20, 20)).T).sum(
        axis=0
    ) - np.arange(400).mean()
    (result,) = dask.compute(y, scheduler=scheduler)
    np.testing.assert_allclose(result, expected)
    assert dask.compute(x.sum(), y.max(), scheduler=scheduler) == dask.compute(
        x.sum(), y.max(), scheduler="sync"
    )


def test_dask_delayed_compute(center_address):
    dask = pytest.importorskip("dask")
    inc = dask.delayed(lambda x: x + 1)
    total = dask.delayed(sum)([inc(i) for i in range(10)])
    assert total.compute(scheduler=functools.partial(get, center_address)) == 55


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("client", ["Executor", "Pool", "get"])
def test_erred_results_are_deleted(center_address, rpc_client, wait_for, client):
    before = set(held_keys(rpc_client.call, center_address))
    with pytest.raises(ZeroDivisionError):
        if client == "Executor":
            with Executor(center_address) as e:
                e.submit(operator.truediv, 1, 0).result(timeout=10)
        elif client == "Pool":
            with Pool(center_address) as pool:
                pool.apply(operator.truediv, [1, 0])
        else:
            get(center_address, {"a": 0, "b": (operator.truediv, 1, "a")}, "b")
    wait_for(
        lambda: set(held_keys(rpc_client.call, center_address)) <= before,
        timeout=1.5,
        what="the erred task's key is deleted from the cluster",
    )


# --------------------------------------------------------------------------- issue 10


def test_named_dataset_shared_between_clients(center_address):
    if not hasattr(Executor, "publish_dataset"):
        pytest.skip("this client predates datasets")
    name = f"scenario-{uuid.uuid4().hex[:8]}"
    with Executor(center_address) as e, Executor(center_address) as other:
        f = e.submit(operator.add, 1, 2)
        try:
            e.publish_dataset(**{name: f, f"{name}-plain": [1, 2]})
        except RuntimeError as err:  # an older center
            assert "does not support datasets" in str(err) and "upgrade" in str(err)
            return
        got = other.get_dataset(name)
        assert got.result(timeout=10) == 3 and other.get_dataset(f"{name}-plain") == [1, 2]
        key = got.key
        del got, f
        other.unpublish_dataset(name)
        other.unpublish_dataset(f"{name}-plain")
        delete(center_address, [key])  # unpinned; nobody else held it


def test_upload_file_to_every_worker(center_address, tmp_path, rpc_client):
    if not hasattr(Executor, "upload_file"):
        pytest.skip("this client predates upload_file")
    name = f"scenario_{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.py"
    path.write_text("VALUE = 42\n")
    check = lambda: __import__(name).VALUE  # noqa: E731 - a lambda goes by value
    with Executor(center_address) as e:
        try:
            installed = e.upload_file(path)
        except RuntimeError as err:  # an older worker or center
            assert "does not support upload_file" in str(err) and "upgrade" in str(err)
            return
        assert set(installed) == set(rpc_client.call(center_address, "workers"))
        for w in installed:
            assert e.submit(check, workers=[w], pure=False).result(timeout=10) == 42
