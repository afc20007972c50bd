"""The engine honours per-task options against a real cluster (options passed
straight to ``Session.update_graph``, as the ``submit`` keywords do)."""

from __future__ import annotations

import os
import time

import pytest

from distributed_client import CancelledError, Executor, Future, NoWorkersError
from distributed_client._args import prepickle
from distributed_client._options import task_options


def flaky(path, fails):
    """Raise on the first `fails` calls (counted in a file: tries run in other processes)."""
    with open(path, "a") as f:
        f.write("x")
    n = os.path.getsize(path)
    if n <= fails:
        raise ValueError(f"try {n} failed")
    return n


def inc(x):
    return x + 1


@pytest.fixture(scope="module")
def e(cluster):
    with Executor(cluster.center_address, no_workers_timeout=2) as ex:
        yield ex


def submit(e, fn, *args, **options):
    """submit(fn, *args) with TaskOptions, through the engine's update_graph(options=...)."""
    key, spec, deps = e._prepare(prepickle(fn), args, {}, pure=False)
    opts = {key: task_options(**options)} if options else None
    e.session.call_soon(
        e.session.update_graph_or_fail, {key: (spec, deps)}, [key], None, None, opts
    )
    return Future(key, e)


def test_retries_rerun_a_task_that_raised(e, tmp_path):
    assert submit(e, flaky, str(tmp_path / "a"), 2, retries=2).result(timeout=30) == 3
    f = submit(e, flaky, str(tmp_path / "b"), 5, retries=1)
    with pytest.raises(ValueError, match="try 2 failed"):  # the last try's error
        f.result(timeout=30)


def test_workers_restrict_and_allow_other_workers_prefers(e, cluster):
    [a, b] = cluster.worker_addresses[:2]
    fs = [submit(e, inc, i, workers=[b]) for i in range(5)]
    assert [f.result(timeout=30) for f in fs] == [1, 2, 3, 4, 5]
    who = e.session.state.who_has([f.key for f in fs])
    assert {w for ws in who.values() for w in ws} == {b}
    gone = "tcp://127.0.0.1:9"  # not a worker: preferred, so it runs elsewhere
    assert submit(e, inc, 1, workers=[gone], allow_other_workers=True).result(timeout=30) == 2


def test_resources_no_worker_declares_fail_naming_them(e):
    f = submit(e, inc, 1, resources={"UNOBTAINIUM": 1})
    with pytest.raises(NoWorkersError, match="UNOBTAINIUM=1"):
        f.result(timeout=30)


def test_cancel_cancels_dependents_waiting_for_it(cluster):
    with Executor(cluster.center_address, no_workers_timeout=None) as e:
        # x waits for a worker that never comes, so y surely waits for x
        x = submit(e, inc, 1, workers=["tcp://127.0.0.1:9"])
        key, spec, deps = e._prepare(prepickle(inc), (x,), {}, pure=False)
        e.session.call_soon(e.session.update_graph_or_fail, {key: (spec, deps)}, [key])
        y = Future(key, e)
        deadline = time.monotonic() + 30
        while e.session.status_of(y.key)[0] != "waiting":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert x.cancel()
        with pytest.raises(CancelledError):
            y.result(timeout=10)
        assert y.status == "cancelled" and x.status == "cancelled"
