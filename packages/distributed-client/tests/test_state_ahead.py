"""The engine's issue-8 policies, without sockets: in-flight depth from the round
trip, tasks sent ahead of their inputs, missing-data that avoids a worker."""

from __future__ import annotations

import random

import pytest

from distributed_client._pipeline import (
    MAX_IN_FLIGHT_PER_CORE,
    RoundTrip,
    default_max_in_flight,
    in_flight_target,
)
from distributed_client._recovery import MAX_MISSING_DATA
from distributed_client._state import SchedulerState
from distributed_client.errors import LostDataError

A, B, C = "tcp://a:1", "tcp://b:1", "tcp://c:1"


def make(*workers, ncores=1, ahead=True, **kw):
    kw.setdefault("max_in_flight", lambda n: 2 * n + 1)
    s = SchedulerState(**kw)
    for w in workers:
        s.add_worker(w, ncores)
        s.workers[w].ahead = ahead
    return s


def chain(n, prefix="x"):
    tasks = {f"{prefix}0": ("spec", [])}
    for i in range(1, n):
        tasks[f"{prefix}{i}"] = ("spec", [f"{prefix}{i - 1}"])
    return tasks


# ---------------------------------------------------------------- in-flight depth


def test_in_flight_target_covers_the_round_trip():
    # unknown: the default
    assert in_flight_target(2, None, 0.001) == default_max_in_flight(2)
    assert in_flight_target(2, 0.01, None) == default_max_in_flight(2)
    # near and long tasks: never below the default
    assert in_flight_target(4, 0.0001, 1.0) == default_max_in_flight(4)
    # 10 ms away, 1 ms tasks: 2 x 10 more per core
    assert in_flight_target(1, 0.010, 0.001) == 1 * (1 + 2 * 10) + 2
    assert in_flight_target(2, 0.010, 0.001) == 2 * (1 + 2 * 10) + 3
    # grows with the round trip, shrinks with the task time
    assert in_flight_target(1, 0.020, 0.001) > in_flight_target(1, 0.010, 0.001)
    assert in_flight_target(1, 0.010, 0.002) < in_flight_target(1, 0.010, 0.001)
    # capped, also for zero-time tasks
    cap = MAX_IN_FLIGHT_PER_CORE * 3 + 4
    assert in_flight_target(3, 10.0, 0.0) == cap
    assert in_flight_target(3, 0.5, 1e-9) == cap


def test_round_trip_takes_the_smallest_recent_sample_and_forgets_old_ones():
    rt = RoundTrip(window=10.0)
    assert rt.rtt is None and rt.task_time is None
    rt.observe(elapsed=0.012, duration=0.002, now=0.0)
    assert rt.rtt == pytest.approx(0.010)
    # queueing at the worker only adds: the estimate stays at the minimum
    for t in range(1, 9):
        rt.observe(elapsed=0.050, duration=0.002, now=float(t))
    assert rt.rtt == pytest.approx(0.010)
    assert rt.task_time == pytest.approx(0.002)
    # the route became slower: noticed after at most two windows
    for t in range(9, 40):
        rt.observe(elapsed=0.032, duration=0.002, now=float(t))
    assert rt.rtt == pytest.approx(0.030)
    # a negative sample (clock noise) counts as zero
    rt.observe(elapsed=0.001, duration=0.002, now=40.0)
    assert rt.rtt == 0.0


# ---------------------------------------------------------------- ahead dispatch


def test_chain_goes_ahead_to_the_worker_running_its_input():
    s = make(A)
    s.update_graph(chain(10), wants=["x9"])
    sent = s.assign()
    # x0 runs; x1, x2 follow it ahead, up to max_in_flight (3)
    assert sent == [(A, "x0"), (A, "x1"), (A, "x2")]
    assert s.tasks["x0"].pending == ()
    assert s.tasks["x1"].pending == ("x0",)
    assert s.tasks["x2"].pending == ("x1",)
    s.task_finished("x0", A, nbytes=8)
    assert s.assign() == [(A, "x3")]
    # replies may come in any order (several connections)
    s.task_finished("x3", A, nbytes=8)
    # x2 is no longer needed (x3 is done): it leaves the worker's slots
    assert s.state_of("x2") == "released"
    s.task_finished("x1", A, nbytes=8)
    assert s.assign() == [(A, "x4"), (A, "x5"), (A, "x6")]
    s.task_finished("x2", A, nbytes=8)  # late: its copy is deleted
    assert s.take_report().delete.get("x2") == [A]
    for k in ("x4", "x5", "x6"):
        s.task_finished(k, A, nbytes=8)
    while True:
        todo = s.assign()
        if not todo:
            break
        for w, k in todo:
            s.task_finished(k, w, nbytes=8)
    assert s.state_of("x9") == "memory"
    # intermediates were released (a late reply of an earlier link is deleted)
    assert all(s.state_of(f"x{i}") in ("released", None) for i in range(9))


def test_no_ahead_dispatch_to_a_worker_that_does_not_support_it():
    s = make(A, ahead=False)
    s.update_graph(chain(5), wants=["x4"])
    assert s.assign() == [(A, "x0")]


def test_no_ahead_when_an_input_runs_elsewhere_or_the_task_is_restricted():
    s = make(A, B)
    s.update_graph(
        {"a": ("spec", []), "b": ("spec", []), "c": ("spec", ["a", "b"])},
        wants=["c"],
        restrictions={"a": [A], "b": [B]},
    )
    assert sorted(s.assign()) == [(A, "a"), (B, "b")]
    s.task_finished("a", A, nbytes=8)
    assert s.assign() == []  # b still runs on B: c waits, it does not go to B ahead
    s2 = make(A, B)
    s2.update_graph(
        {"a": ("spec", []), "c": ("spec", ["a"])}, wants=["c"], restrictions={"a": [A], "c": [B]}
    )
    assert s2.assign() == [(A, "a")]  # c may only run on B


def test_ahead_task_fails_with_its_input():
    s = make(A)
    s.update_graph(chain(3), wants=["x2"])
    assert len(s.assign()) == 3
    err = ZeroDivisionError("boom")
    s.task_erred("x1", A, err)
    assert s.state_of("x2") == "erred"
    assert s.tasks["x2"].exception is err
    assert not s.workers[A].processing - {s.tasks["x0"]}
    # the worker's late error reply for x2 is ignored (and its copy deleted)
    s.task_erred("x2", A, err)
    assert s.take_report().delete.get("x2") == [A]


def test_worker_death_sends_ahead_tasks_back_to_waiting_without_blame():
    s = make(A, B, allowed_failures=1)
    s.update_graph(chain(4), wants=["x3"], restrictions=None)
    sent = s.assign()
    w = sent[0][0]
    assert [k for _, k in sent] == ["x0", "x1", "x2"]
    s.remove_worker(w)
    other = B if w == A else A
    # x0 was running: blamed once -> KilledWorker with allowed_failures=1
    assert s.state_of("x0") == "erred"
    s2 = make(A, B, allowed_failures=2)
    s2.update_graph(chain(4), wants=["x3"])
    w = s2.assign()[0][0]
    s2.remove_worker(w)
    other = B if w == A else A
    assert s2.tasks["x0"].suspicious == 1
    # x1, x2 could not have started: not blamed, waiting again
    assert s2.tasks["x1"].suspicious == 0 and s2.tasks["x2"].suspicious == 0
    assert s2.state_of("x1") == "waiting" and s2.state_of("x2") == "waiting"
    assert s2.tasks["x1"].pending == ()
    # x0 is suspicious: it runs alone; its dependents follow only once it is done
    assert s2.assign() == [(other, "x0")]
    s2.task_finished("x0", other, nbytes=8)
    done = []
    while True:
        todo = s2.assign()
        if not todo:
            break
        for ww, k in todo:
            s2.task_finished(k, ww, nbytes=8)
            done.append(k)
    assert done[-1] == "x3" and s2.state_of("x3") == "memory"


def test_missing_pending_input_sends_the_task_back_to_waiting():
    s = make(A)
    s.update_graph(chain(3), wants=["x2"])
    assert len(s.assign()) == 3
    # x1's input never arrived in time on the worker: the reply names it
    s.task_missing_data("x1", A, ["x0"], {"x0": []})
    assert s.state_of("x1") == "waiting"
    assert s.state_of("x0") == "processing"  # not dropped: it still runs
    s.task_finished("x0", A, nbytes=8)
    assert s.assign() == [(A, "x1")]


@pytest.mark.parametrize("seed", range(30))
def test_model_random_reply_order_deaths_and_errors(seed):
    """Random graphs, replies in any order, deaths: exact values in the end.

    A tiny model of the workers: a task sent with ``pending`` inputs runs once
    those are stored on its worker; other inputs must be in memory somewhere.
    Values are sums, so a wrong input shows in the result.
    """
    rnd = random.Random(seed)
    workers = [A, B, C]
    s = make(*workers, allowed_failures=5)
    s.max_in_flight = lambda n: rnd.randint(2, 8)
    for w in workers:
        s.workers[w].max_in_flight = rnd.randint(2, 8)
    n = 40
    tasks, expected = {}, {}
    for i in range(n):
        deps = rnd.sample(range(i), k=min(i, rnd.randint(0, 3)))
        key = f"t{i}"
        tasks[key] = ("spec", [f"t{d}" for d in deps])
        expected[key] = 1 + sum(expected[f"t{d}"] for d in deps)
    bad = f"t{rnd.randrange(n)}" if seed % 3 == 0 else None
    wants = [f"t{i}" for i in range(n - 5, n)]
    s.update_graph(tasks, wants=wants)
    stores = {w: {} for w in workers}
    inflight = []  # (worker, key, pending)
    sent_to = set()
    alive = set(workers)
    deaths = 0
    for _ in range(5000):
        for w, k in s.assign():
            inflight.append((w, k, s.tasks[k].pending))
            sent_to.add((w, k))
            # a task goes ahead only to the worker its pending inputs were sent to
            assert all((w, d) in sent_to for d in s.tasks[k].pending), (w, k)
        if not inflight:
            break
        rnd.shuffle(inflight)
        progressed = False
        for item in list(inflight):
            w, k, pending = item
            ts = s.tasks.get(k)
            deps = [f"t{d}" for d in range(n) if f"t{d}" in tasks[k][1]]
            local = stores[w]
            waits = [d for d in pending if d not in local]
            if waits:
                running_here = {kk for ww, kk, _ in inflight if ww == w}
                if all(d in running_here for d in waits):
                    continue  # waits on the worker for its pending inputs
                # an input's compute ended here without a result (or the
                # bound passed): missing-data naming it
                inflight.remove(item)
                s.task_missing_data(k, w, waits, {d: [] for d in waits})
                progressed = True
                break
            vals = []
            for d in deps:
                holders = [h for h in alive if d in stores[h]]
                if d in local:
                    vals.append(local[d])
                elif holders:
                    vals.append(stores[holders[0]][d])
                else:
                    vals = None
                    break
            inflight.remove(item)
            progressed = True
            if vals is None:
                missing = [d for d in deps if not any(d in stores[h] for h in alive)]
                s.task_missing_data(k, w, missing, s.dependency_hints(k) if ts else {})
            elif k == bad or any(isinstance(v, Exception) for v in vals):
                err = next((v for v in vals if isinstance(v, Exception)), ValueError(k))
                local[k] = err
                s.task_erred(k, w, err)
            else:
                local[k] = 1 + sum(vals)
                s.task_finished(k, w, nbytes=8)
            break
        if not progressed:
            raise AssertionError(f"deadlock: {inflight!r}")
        if deaths < 2 and rnd.random() < 0.02 and len(alive) > 1:
            victim = rnd.choice(sorted(alive))
            alive.discard(victim)
            deaths += 1
            stores[victim] = {}
            inflight = [x for x in inflight if x[0] != victim]
            s.remove_worker(victim)
            s.add_worker(victim + "-new", 1)
            s.workers[victim + "-new"].ahead = True
            workers.append(victim + "-new")
            stores[victim + "-new"] = {}
            alive.add(victim + "-new")
    else:
        raise AssertionError("did not finish")
    for key in wants:
        ts = s.tasks[key]
        if ts.state == "erred":
            assert bad is not None
        else:
            assert ts.state == "memory", (key, ts.state)
            holder = next(iter(ts.who_has))
            assert stores[holder][key] == expected[key]


# ---------------------------------------------------------------- missing data


def _two_inputs(s):
    s.update_graph(
        {"x": ("spec", []), "y": ("spec", [])},
        wants=["x", "y"],
        restrictions={"x": [A], "y": [B]},
    )
    for w, k in s.assign():
        s.task_finished(k, w, nbytes=8)


def test_missing_data_avoids_the_worker_while_the_holders_are_listed():
    s = make(A, B, C)
    _two_inputs(s)
    s.update_graph({"z": ("spec", ["x", "y"])}, wants=["z"])
    (w, _), *_ = s.assign()
    assert w in (A, B)
    s.task_missing_data("z", w, ["y" if w == A else "x"], s.dependency_hints("z"))
    # the holders are kept; z goes to a worker it has not failed on
    assert s.who_has(["x", "y"]) == {"x": [A], "y": [B]}
    (w2, _), *_ = s.assign()
    assert w2 not in (w,)
    s.task_missing_data("z", w2, ["y" if w2 == A else "x"], s.dependency_hints("z"))
    assert s.assign() == [(C, "z")]
    assert s.tasks["z"].avoid == {A, B}
    s.add_replicas(C, ["x", "y"])
    s.task_finished("z", C, nbytes=8)
    assert s.who_has(["x", "y"]) == {"x": [A, C], "y": [B, C]}
    # a task restricted to B now has another holder of x to fetch from
    s.update_graph({"zz": ("spec", ["x", "y"])}, wants=["zz"], restrictions={"zz": [B]})
    assert s.assign() == [(B, "zz")]
    assert s.dependency_hints("zz")["x"] in ([A, C], [C, A])


def test_missing_data_drops_holders_when_no_worker_is_left_to_try():
    s = make(A, B)
    _two_inputs(s)
    s.update_graph({"zz": ("spec", ["x", "y"])}, wants=["zz"], restrictions={"zz": [B]})
    assert s.assign() == [(B, "zz")]
    s.task_missing_data("zz", B, ["x"], s.dependency_hints("zz"))
    # no other worker may run zz: x is recomputed (on A, where it is restricted)
    assert s.state_of("x") != "memory"
    assert s.tasks["zz"].avoid == set()
    assert s.assign() == [(A, "x")]


def test_missing_data_is_bounded():
    s = make(A)
    s.update_graph({"x": ("spec", []), "z": ("spec", ["x"])}, wants=["z"])
    for _ in range(MAX_MISSING_DATA + 1):
        for w, k in s.assign():
            if k == "x":
                s.task_finished(k, w, nbytes=8)
            else:
                s.task_missing_data(k, w, ["x"], s.dependency_hints(k))
        if s.state_of("z") == "erred":
            break
    assert s.state_of("z") == "erred"
    assert isinstance(s.tasks["z"].exception, LostDataError)


def test_replica_of_a_released_key_is_deleted():
    s = make(A, B)
    s.add_replicas(B, ["gone"])
    assert s.take_report().delete == {"gone": [B]}
    s.add_replicas("tcp://unknown:1", ["x"])  # a worker we do not know: ignored
    assert not s.take_report()


def test_stealing_skips_a_worker_the_task_avoids():
    s = make(A, B)
    s.update_graph({f"t{i}": ("spec", []) for i in range(20)}, wants=[f"t{i}" for i in range(20)])
    for ts in s.tasks.values():
        ts.avoid_worker(B)
    sent = s.assign()
    assert {w for w, _ in sent} == {A}


def test_idle_worker_still_steals_from_a_deep_pipeline():
    s = make(A, ahead=False)
    s.workers[A].max_in_flight = in_flight_target(1, 0.010, 0.0)  # far, tiny tasks
    keys = [f"t{i}" for i in range(1000)]
    s.update_graph({k: ("spec", []) for k in keys}, wants=keys)
    first = s.assign()
    assert len(first) == MAX_IN_FLIGHT_PER_CORE + 4  # the cap, not all 1000
    s.add_worker(B, 1)
    stolen = s.assign()
    assert stolen and {w for w, _ in stolen} == {B}


def test_pipeline_policy_sizes_depth_from_reply_gaps_and_identity():
    from distributed_client._pipeline import PipelinePolicy
    from distributed_client._tasks import WorkerState

    ws = WorkerState(A, ncores=1, max_in_flight=3)
    ws.processing.update({object(), object()})  # busy: reply gaps measure its speed
    p = PipelinePolicy(pipeline_cover=0.003)
    for i in range(20):
        p.on_reply(A, ws, now=i * 0.0001)  # a reply every 100 us
    assert ws.max_in_flight == 16 + 4  # 1 + 0.003 / 0.0001, capped at 16 * ncores + 4
    slow = WorkerState(B, ncores=1, max_in_flight=3)
    slow.processing.update({object(), object()})
    for i in range(5):
        p.on_reply(B, slow, now=i * 0.2)
    assert slow.max_in_flight == 3  # long tasks: the default depth
    assert not p.on_identity(slow, ["keep_inputs"]) and not slow.ahead
    assert p.on_identity(slow, ["pending"]) and slow.ahead and p.is_capable(B)
    p.forget(B)
    assert not p.is_capable(B)
