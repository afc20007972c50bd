"""The Executor surface of issue 10 against a real cluster: scheduling keywords,
concurrent.futures compatibility, running/retry/cancel/fire_and_forget, the
cluster view, scatter of one object, Executor() and its configured address."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import os
import time
from operator import add
from pathlib import Path

import numpy as np
import pytest

from distributed_client import (
    CancelledError,
    Executor,
    Future,
    LocalCluster,
    Pool,
    fire_and_forget,
    wait,
)
from distributed_client._submit import batches
from distributed_core import config

DEADLINE = 20.0  # seconds any poll below waits before failing


def inc(x):
    return x + 1


def echo(*args, **kwargs):
    return args, kwargs


def wait_for_file(path, timeout=20.0):
    """Block until `path` exists (the test creates it); a bounded wait."""
    end = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > end:
            raise TimeoutError(path)
        time.sleep(0.01)
    return path


def fail_first_time(path):
    """Raise on the first call (marking `path`), succeed on the next."""
    if not os.path.exists(path):
        Path(path).write_text("failed once")
        raise ValueError("first attempt fails")
    return "ok"


def touch_later(path, delay):
    time.sleep(delay)
    Path(path).write_text("done")
    return path


def poll(condition, what):
    end = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"not within {DEADLINE}s: {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def e(cluster):
    with Executor(cluster) as ex:
        yield ex


# A worker runs the tasks it was sent in order: tasks that block until the
# test lets them go run on one worker, the others on the other one.
@pytest.fixture
def slow_w(cluster):
    return cluster.worker_addresses[0]


@pytest.fixture
def quick_w(cluster):
    return cluster.worker_addresses[1]


# ---------------------------------------------------------------------- scheduling keywords


def test_submit_keywords_never_reach_the_function(e, cluster):
    w = cluster.worker_addresses[0]
    f = e.submit(
        echo,
        1,
        a=2,
        key="echo-explicit",
        pure=False,
        workers=[w],
        allow_other_workers=True,
        retries=2,
        priority=5,
        resources={"CPU": 0},
    )
    assert f.key == "echo-explicit"
    assert f.result(timeout=DEADLINE) == ((1,), {"a": 2})
    opts = e._call_in_loop(lambda: e.session.state.tasks[f.key].options)
    assert opts.retries == 2 and opts.priority == 5 and opts.allow_other_workers
    assert opts.workers == frozenset([w]) and opts.resources == {"CPU": 0.0}


def test_map_keywords_never_reach_the_function(e):
    fs = e.map(
        echo,
        [1, 2, 3],
        b=4,
        retries=1,
        priority=-1,
        resources="CPU=0",
        batch_size=2,
        timeout=60,
        chunksize=10,
        pure=False,
    )
    assert e.gather(fs) == [((i,), {"b": 4}) for i in (1, 2, 3)]


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"retries": -1}, ValueError, "retries=-1"),
        ({"retries": 1.5}, ValueError, "retries=1.5"),
        ({"priority": "high"}, TypeError, "priority='high'"),
        ({"workers": 5}, TypeError, "workers="),
        ({"workers": []}, ValueError, "workers= is empty"),
        ({"allow_other_workers": True}, ValueError, "needs workers"),
        ({"allow_other_workers": "yes", "workers": "127.0.0.1:1"}, TypeError, "True or False"),
        ({"resources": "GPU"}, ValueError, "NAME=AMOUNT"),
        ({"resources": {"GPU": -1}}, ValueError, "GPU=-1"),
    ],
)
def test_bad_keywords_raise_in_the_caller(e, kwargs, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(")):
        e.submit(inc, 1, **kwargs)
    with pytest.raises(error, match=words.replace("(", r"\(")):
        e.map(inc, [1, 2], **kwargs)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"batch_size": 0}, "batch_size=0"),
        ({"chunksize": 0}, "chunksize=0"),
        ({"timeout": -1}, "timeout=-1"),
        ({"key": ["only-one"]}, "fewer keys"),
    ],
)
def test_bad_map_keywords(e, kwargs, words):
    with pytest.raises(ValueError, match=words):
        e.map(inc, [1, 2], **kwargs)


def test_map_keys_prefix_and_names(e):
    fs = e.map(inc, [1, 2], key="plus-one")
    assert all(f.key.startswith("plus-one-") for f in fs)
    named = e.map(inc, [1, 2], key=["a-1", "a-2"])
    assert [f.key for f in named] == ["a-1", "a-2"]
    assert e.gather(fs + named) == [2, 3, 2, 3]


def test_map_reads_iterables_in_batches(e):
    consumed = []

    def numbers():
        for i in range(5000):
            consumed.append(i)
            yield i

    fs = e.map(add, numbers(), range(10**12), batch_size=1000, pure=False)
    assert len(fs) == 5000  # zip stops at the shortest: the huge range is never listed
    assert e.gather(fs) == [2 * i for i in range(5000)]
    gen = batches((iter(range(10)),), 4)
    assert next(gen) == [(0,), (1,), (2,), (3,)]


def test_map_workers_restriction(e, cluster):
    w = cluster.worker_addresses[1]
    fs = e.map(inc, range(6), workers=w, pure=False)
    wait(fs)
    assert set().union(*e.who_has(fs).values()) == {w}
    assert e.gather(fs) == list(range(1, 7))


def test_map_timeout_cancels_what_is_not_finished(e, tmp_path, slow_w):
    flag = tmp_path / "never"
    fs = e.map(wait_for_file, [str(flag)], timeout=0.3, pure=False, workers=slow_w)
    with pytest.raises(CancelledError):
        fs[0].result(timeout=DEADLINE)
    flag.write_text("go")  # lets the worker thread finish


# ---------------------------------------------------------------------- concurrent.futures


def test_concurrent_futures_wait_and_as_completed(e):
    fs = e.map(inc, range(20), pure=False)
    done, not_done = cf.wait(fs, timeout=DEADLINE)
    assert done == set(fs) and not not_done
    fs2 = e.map(inc, range(20, 40), pure=False)
    seen = list(cf.as_completed(fs2 + fs, timeout=DEADLINE))
    assert sorted(f.result() for f in seen) == list(range(1, 41))
    assert all(f.done() for f in seen)


def test_concurrent_futures_first_exception_and_cancelled(e, tmp_path, slow_w, quick_w):
    flag = tmp_path / "go"
    bad = e.submit(inc, "x", pure=False, workers=quick_w)
    slow = e.submit(wait_for_file, str(flag), pure=False, workers=slow_w)
    done, not_done = cf.wait([bad, slow], timeout=DEADLINE, return_when=cf.FIRST_EXCEPTION)
    assert done == {bad} and not_done == {slow}
    assert isinstance(bad.exception(), TypeError)
    slow.cancel()
    done, _ = cf.wait([slow], timeout=DEADLINE)
    assert done == {slow} and slow.cancelled()
    flag.write_text("go")


def test_our_wait_return_when(e, tmp_path, slow_w, quick_w):
    flag = tmp_path / "go"
    slow = e.submit(wait_for_file, str(flag), pure=False, workers=slow_w)
    quick = e.submit(inc, 1, pure=False, workers=quick_w)
    done, not_done = wait([slow, quick], return_when="FIRST_COMPLETED", timeout=DEADLINE)
    assert quick in done and slow in not_done
    bad = e.submit(inc, "y", pure=False, workers=quick_w)
    done, not_done = wait([slow, bad], return_when="FIRST_EXCEPTION", timeout=DEADLINE)
    assert done == {bad} and not_done == {slow}
    done, not_done = wait([slow], timeout=0.05)
    assert not_done == {slow}
    with pytest.raises(ValueError, match="return_when"):
        wait([slow], return_when="SOMETIMES")
    flag.write_text("go")
    assert wait([slow], timeout=DEADLINE).done == {slow}


def test_running(e, tmp_path, slow_w):
    flag = tmp_path / "go"
    f = e.submit(wait_for_file, str(flag), pure=False, workers=slow_w)
    poll(f.running, "the task runs")
    flag.write_text("go")
    assert f.result(timeout=DEADLINE) == str(flag)
    assert not f.running()


def test_retry_reruns_an_erred_task_and_its_erred_inputs(e, tmp_path):
    marker = tmp_path / "attempted"
    x = e.submit(fail_first_time, str(marker), pure=False)
    y = e.submit(len, x, pure=False)
    with pytest.raises(ValueError, match="first attempt"):
        y.result(timeout=DEADLINE)
    cf.wait([x], timeout=DEADLINE)  # hooks x for concurrent.futures: reset by retry
    assert x.exception() is not None
    y.retry()  # reruns x too
    assert y.result(timeout=DEADLINE) == 2
    assert x.result() == "ok" and x.exception() is None
    done, _ = cf.wait([x], timeout=DEADLINE)
    assert done == {x}
    z = e.submit(inc, 1)
    z.retry()  # not erred: nothing happens
    assert z.result() == 2


def test_cancel_also_cancels_queued_dependents(e, tmp_path, slow_w, quick_w):
    flag = tmp_path / "go"
    x = e.submit(wait_for_file, str(flag), pure=False, workers=slow_w)
    y = e.submit(len, x, pure=False)
    z = e.submit(inc, 1, pure=False, workers=quick_w)
    poll(x.running, "x runs")
    e.cancel([x])
    for f in (x, y):
        with pytest.raises(CancelledError):
            f.result(timeout=DEADLINE)
        assert f.cancelled()
    assert z.result() == 2
    e.cancel(z)  # finished: keeps its value
    assert z.result() == 2 and not z.cancelled()
    flag.write_text("go")


def test_fire_and_forget_runs_to_completion_then_releases(e, tmp_path):
    out = tmp_path / "written"
    f = e.submit(touch_later, str(out), 0.3, pure=False)
    key = f.key
    fire_and_forget(f)
    del f
    poll(out.exists, "the forgotten task ran")
    poll(lambda: not e._call_in_loop(lambda: key in e.session.state.tasks), "client forgets it")
    poll(lambda: key not in e.who_has(), "its result is deleted on the cluster")


def test_fire_and_forget_rejects_other_things():
    with pytest.raises(TypeError, match="takes Futures"):
        fire_and_forget([1])


# ---------------------------------------------------------------------- cluster view and repr


def test_who_has_has_what_ncores_scheduler_info(e, cluster):
    fs = e.map(inc, range(4), pure=False)
    wait(fs)
    who = e.who_has(fs)  # this client's own knowledge: exact at once
    assert set(who) == {f.key for f in fs}
    assert all(set(ws) <= set(cluster.worker_addresses) and ws for ws in who.values())
    keys = {f.key for f in fs}
    # the center's view follows as the workers report their keys
    poll(lambda: keys <= {k for ks in e.has_what().values() for k in ks}, "has_what")
    assert set(e.has_what()) == set(cluster.worker_addresses)
    assert keys <= set(e.who_has())
    assert set(e.has_what(cluster.worker_addresses[0])) == {cluster.worker_addresses[0]}
    assert e.ncores() == {w: 1 for w in cluster.worker_addresses}
    info = e.scheduler_info()
    assert set(info["workers"]) == set(cluster.worker_addresses)
    for w in info["workers"].values():
        assert w["ncores"] == 1 and "nkeys" in w and "memory" in w


def test_repr_html(e, cluster):
    f = e.submit(inc, 1)
    f.result()
    html = e._repr_html_()
    assert html.startswith("<div>") and "<table>" in html
    assert e.center in html and cluster.worker_addresses[0] in html
    assert "finished" in f._repr_html_() and "inc-" in f._repr_html_()
    ch = cluster._repr_html_()
    assert cluster.center_address in ch and "running" in ch
    assert "&lt;script&gt;" in Future("<script>", e)._repr_html_()


# ---------------------------------------------------------------------- scatter


def test_scatter_single_objects_and_collections(e):
    for value in (b"abc", "abc", np.arange(5), 7, {1, 2}.__class__):
        f = e.scatter(value)
        assert isinstance(f, Future)
        got = f.result()
        if isinstance(value, np.ndarray):
            assert (got == value).all()
        else:
            assert got == value
    assert e.gather(e.scatter([1, 2])) == [1, 2]
    t = e.scatter((1, 2))
    assert isinstance(t, tuple) and e.gather(list(t)) == [1, 2]
    d = e.scatter({"x": b"abc"})
    assert list(d) == ["x"] and d["x"].result() == b"abc"
    assert sorted(e.gather(list(e.scatter({3, 4})))) == [3, 4]
    assert e.gather(e.scatter(iter([5, 6]))) == [5, 6]


# ---------------------------------------------------------------------- what the Executor connects to


def test_executor_of_a_cluster_object_and_of_the_configured_address(cluster, monkeypatch):
    with Executor(cluster) as ex:
        assert ex.center == cluster.center_address and ex.cluster is None
        assert ex.submit(inc, 1).result() == 2
    monkeypatch.setenv("DISTRIBUTED_CLIENT__ADDRESS", cluster.center_address)
    config.reset()
    try:
        with Executor() as ex:
            assert ex.center == cluster.center_address and ex.cluster is None
            assert ex.submit(inc, 2).result() == 3
        with Pool() as pool:  # Pool shares the constructor
            assert pool.center == cluster.center_address and pool.cluster is None
    finally:
        monkeypatch.delenv("DISTRIBUTED_CLIENT__ADDRESS")
        config.reset()


def test_executor_starts_and_closes_its_own_local_cluster():
    ex = Executor()
    cluster = ex.cluster
    try:
        assert isinstance(cluster, LocalCluster) and cluster.status == "running"
        assert ex.center == cluster.center_address
        assert ex.submit(inc, 1).result(timeout=DEADLINE) == 2
    finally:
        ex.shutdown()
    assert cluster.status == "closed"
    assert all(p.poll() is not None for p in [cluster.center_process, *cluster.worker_processes]
               if p is not None)  # fmt: skip


def test_asynchronous_executor_starts_its_own_cluster():
    async def main():
        async with Executor(asynchronous=True) as ex:
            cluster = ex.cluster
            assert cluster.status == "running"
            assert await ex.submit(inc, 1) == 2
        return cluster

    cluster = asyncio.run(main())
    assert cluster.status == "closed"
