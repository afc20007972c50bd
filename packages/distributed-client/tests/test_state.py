"""Unit tests of the pure scheduling engine (no sockets)."""

from __future__ import annotations

import pytest

from distributed_client._pipeline import default_max_in_flight
from distributed_client._state import SchedulerState
from distributed_client.errors import (
    CancelledError,
    KilledEveryWorker,
    KilledWorker,
    LostDataError,
    NoWorkersError,
)

A, B, C = "tcp://a:1", "tcp://b:1", "tcp://c:1"


def make(*workers, ncores=1, **kw):
    kw.setdefault("max_in_flight", lambda n: 2 * n + 1)  # small numbers, easy to check
    s = SchedulerState(**kw)
    for w in workers:
        s.add_worker(w, ncores)
    return s


def run_all(s, results=None, nbytes=8):
    """Finish everything assigned, in rounds, until nothing is left to do."""
    order = []
    while True:
        todo = s.assign()
        if not todo:
            return order
        for w, k in todo:
            order.append((w, k))
            s.task_finished(k, w, nbytes=nbytes)


def chain(n, prefix="x"):
    tasks = {f"{prefix}0": ("spec", [])}
    for i in range(1, n):
        tasks[f"{prefix}{i}"] = ("spec", [f"{prefix}{i - 1}"])
    return tasks


def test_single_task_lifecycle():
    s = make(A)
    s.update_graph({"x": ("spec", [])}, wants=["x"])
    assert s.state_of("x") == "queued"
    assert s.assign() == [(A, "x")]
    assert s.state_of("x") == "processing"
    assert s.assign() == []
    s.task_finished("x", A, nbytes=10)
    assert s.state_of("x") == "memory"
    r = s.take_report()
    assert r.done == ["x"] and not r.erred and not r.delete
    assert s.who_has(["x"]) == {"x": [A]}
    s.release(["x"])
    assert s.take_report().delete == {"x": [A]}
    assert "x" not in s.tasks


def test_chain_releases_intermediates_but_keeps_definitions():
    s = make(A)
    s.update_graph(chain(4), wants=["x3"])
    run_all(s)
    r = s.take_report()
    assert r.done == ["x0", "x1", "x2", "x3"]
    assert sorted(r.delete) == ["x0", "x1", "x2"]
    assert s.state_of("x0") == "released"  # kept: x3 could need recomputing
    s.release(["x3"])
    assert s.tasks == {}


def test_no_workers_no_assignment():
    s = SchedulerState()
    s.update_graph({"x": ("spec", [])}, wants=["x"])
    assert s.assign() == []
    s.add_worker(A)
    assert s.assign() == [(A, "x")]


def test_unknown_dependency_and_wants_rejected():
    s = make(A)
    with pytest.raises(KeyError, match="nope"):
        s.update_graph({"x": ("spec", ["nope"])}, wants=["x"])
    with pytest.raises(KeyError, match="zzz"):
        s.update_graph({"x": ("spec", [])}, wants=["zzz"])
    assert s.tasks == {}


def test_max_in_flight_per_worker():
    s = make(A, B, ncores=2)
    s.update_graph({i: ("spec", []) for i in range(100)}, wants=range(100))
    first = s.assign()
    assert len(first) == 2 * (2 * 2 + 1)
    per = {A: 0, B: 0}
    for w, _ in first:
        per[w] += 1
    assert per == {A: 5, B: 5}
    # finishing one frees exactly one slot on that worker
    w, k = first[0]
    s.task_finished(k, w)
    assert [x[0] for x in s.assign()] == [w]


def test_default_in_flight_keeps_cores_busy():
    s = SchedulerState()
    s.add_worker(A, 2)
    s.update_graph({i: ("spec", []) for i in range(100)}, wants=range(100))
    assert len(s.assign()) == default_max_in_flight(2) > 2 * 2


def test_locality_goes_to_worker_with_most_bytes():
    s = make(A, B)
    s.add_data({"big": [A], "small": [B]}, nbytes={"big": 1000, "small": 10}, wants=True)
    s.update_graph({"y": ("spec", ["big", "small"])}, wants=["y"])
    assert s.assign() == [(A, "y")]
    assert s.dependency_hints("y") == {"big": [A], "small": [B]}


def test_ties_go_to_least_busy_worker():
    s = make(A, B)
    s.add_data({"d": [A, B]}, nbytes={"d": 10}, wants=True)
    s.update_graph({"busy": ("spec", [])}, wants=["busy"], restrictions={"busy": [A]})
    assert s.assign() == [(A, "busy")]
    s.update_graph({"y": ("spec", ["d"])}, wants=["y"])
    assert s.assign() == [(B, "y")]


def test_idle_worker_steals_queued_work():
    s = make(A, B)
    s.add_data({"d": [A]}, nbytes={"d": 1000}, wants=True)
    s.update_graph({i: ("spec", ["d"]) for i in range(10)}, wants=range(10))
    out = s.assign()
    assert {w for w, _ in out} == {A, B}  # B took some although d is on A
    assert sum(1 for w, _ in out if w == A) == 3


def test_restrictions_respected_and_waiting_for_worker():
    s = make(A)
    s.update_graph({"x": ("spec", [])}, wants=["x"], restrictions={"x": [B]})
    assert s.assign() == []
    s.add_worker(B)
    assert s.assign() == [(B, "x")]


def test_error_propagates_to_dependents():
    s = make(A)
    s.update_graph(chain(3), wants=["x2"])
    [(w, k)] = s.assign()
    err = ZeroDivisionError("boom")
    s.task_erred(k, w, err)
    r = s.take_report()
    assert sorted(r.erred) == ["x0", "x1", "x2"]
    assert s.tasks["x2"].exception is err
    assert s.assign() == []
    # a new task on an erred key fails at once
    s.update_graph({"y": ("spec", ["x1"])}, wants=["y"])
    assert s.state_of("y") == "erred"
    assert s.tasks["y"].exception is err


def test_worker_death_recomputes_lost_results():
    s = make(A, B)
    s.update_graph(chain(3), wants=["x2"])
    [(w0, k)] = s.assign()
    s.task_finished("x0", w0)
    [(w1, k)] = s.assign()
    assert k == "x1"
    s.task_finished("x1", w1)
    [(w2, k)] = s.assign()
    assert k == "x2"
    s.take_report()
    # the worker running x2 dies; x1 (on the same worker) was lost too
    s.remove_worker(w2)
    other = B if w2 == A else A
    assert s.state_of("x2") in ("waiting", "queued")
    order = run_all(s)
    assert all(w == other for w, _ in order)
    assert [k for _, k in order][-1] == "x2"
    assert s.state_of("x2") == "memory"


def test_missing_data_reply_recomputes_input():
    s = make(A, B)
    s.update_graph({"x": ("spec", []), "y": ("spec", ["x"])}, wants=["y"])
    [(w, _)] = s.assign()
    s.task_finished("x", w)
    [(w2, _)] = s.assign()
    s.task_missing_data("y", w2, ["x"])
    assert s.state_of("x") == "queued"
    assert s.state_of("y") == "waiting"
    order = run_all(s)
    assert [k for _, k in order] == ["x", "y"]


def test_scattered_data_lost_fails_with_keys():
    s = make(A, B)
    s.add_data({"d": [A]}, nbytes={"d": 8}, wants=True)
    s.update_graph({"y": ("spec", ["d"])}, wants=["y"])
    s.remove_worker(A)
    assert s.state_of("d") == "erred"
    assert isinstance(s.tasks["d"].exception, LostDataError)
    assert s.state_of("y") == "erred"
    assert "d" in str(s.tasks["y"].exception)


def test_scattered_with_replica_survives():
    s = make(A, B)
    s.add_data({"d": [A, B]}, nbytes={"d": 8}, wants=True)
    s.remove_worker(A)
    assert s.state_of("d") == "memory"
    assert s.who_has(["d"]) == {"d": [B]}


def test_killed_worker_after_allowed_failures():
    s = make(A, B, C, allowed_failures=3)
    s.update_graph({"bad": ("spec", []), "good": ("spec", [])}, wants=["bad", "good"])
    for i in range(3):
        out = dict((k, w) for w, k in s.assign())
        assert "bad" in out
        if i > 0:
            # suspicious: alone on its worker
            assert sum(1 for k, w in out.items() if w == out["bad"]) == 1
        if "good" in out:
            s.task_finished("good", out["good"])
        s.remove_worker(out["bad"])
    assert s.state_of("bad") == "erred"
    exc = s.tasks["bad"].exception
    assert isinstance(exc, KilledWorker) and exc.attempts == 3
    assert "bad" in str(exc)
    assert s.state_of("good") == "memory" or s.state_of("good") in ("queued", "waiting")


def test_innocent_bystander_not_blamed():
    s = make(A, B, allowed_failures=2)
    s.update_graph({i: ("spec", []) for i in range(3)}, wants=range(3))
    first = s.assign()
    s.remove_worker(A)  # A's tasks are suspicious once; B's are fine
    for w, k in first:
        if w == B:
            s.task_finished(k, B)
    s.add_worker(C)
    run_all(s)
    for i in range(3):
        assert s.state_of(i) == "memory"


def test_release_cancels_pending_and_deletes_late_result():
    s = make(A)
    s.update_graph({"x": ("spec", [])}, wants=["x"])
    [(w, _)] = s.assign()
    s.release(["x"])
    assert "x" not in s.tasks
    s.task_finished("x", w)
    assert s.take_report().delete == {"x": [A]}
    assert s.workers[A].processing == set()


def test_shared_dependency_kept_while_any_dependent_active():
    s = make(A)
    s.update_graph(
        {"x": ("spec", []), "y": ("spec", ["x"]), "z": ("spec", ["x"])}, wants=["y", "z"]
    )
    run_all(s)
    r = s.take_report()
    assert list(r.delete) == ["x"]  # only after both y and z finished


def test_cancel():
    s = make(A)
    s.update_graph(chain(2), wants=["x1"])
    s.assign()
    s.cancel(["x0"])
    assert s.state_of("x0") == "erred"
    assert isinstance(s.tasks["x1"].exception, CancelledError)
    assert s.workers[A].processing == set()


def test_same_key_computed_once():
    s = make(A)
    s.update_graph({"x": ("spec", [])}, wants=["x"])
    s.update_graph({"x": ("spec", [])}, wants=["x"])
    assert s.tasks["x"].wants == 2
    assert s.assign() == [(A, "x")]
    s.task_finished("x", A)
    s.release(["x"])
    assert "x" in s.tasks
    s.release(["x"])
    assert "x" not in s.tasks


def test_deep_chain_no_recursion_limit():
    s = make(A)
    s.update_graph(chain(20000), wants=["x19999"])
    run_all(s)
    assert s.state_of("x19999") == "memory"
    s.remove_worker(A)
    s.add_worker(B)
    run_all(s)
    assert s.state_of("x19999") == "memory"


def test_tree_reduction_with_two_deaths():
    s = make(A, B, C)
    tasks = {("l", i): ("spec", []) for i in range(256)}
    level, n = "l", 256
    depth = 0
    while n > 1:
        depth += 1
        name = f"r{depth}"
        for i in range(n // 2):
            tasks[(name, i)] = ("spec", [(level, 2 * i), (level, 2 * i + 1)])
        level, n = name, n // 2
    root = (level, 0)
    s.update_graph(tasks, wants=[root])
    finished = 0
    killed = []
    while True:
        todo = s.assign()
        if not todo:
            break
        for w, k in todo:
            if w in killed:
                continue
            s.task_finished(k, w)
            finished += 1
            if finished == 100 and not killed:
                killed.append(A)
                s.remove_worker(A)
            elif finished == 300 and len(killed) == 1:
                killed.append(B)
                s.remove_worker(B)
    assert s.state_of(root) == "memory"
    assert s.who_has([root]) == {root: [C]}


def test_no_blame_when_task_never_reached_worker():
    s = make(A, B, allowed_failures=1)
    s.update_graph({"x": ("spec", [])}, wants=["x"])
    [(w, _)] = s.assign()
    s.remove_worker(w, blame=False)
    assert s.state_of("x") == "queued"
    assert s.tasks["x"].suspicious == 0


def test_key_missing_on_holder():
    s = make(A, B)
    s.update_graph({"x": ("spec", [])}, wants=["x"])
    [(w, _)] = s.assign()
    s.task_finished("x", w)
    s.key_missing_on("x", w)
    assert s.state_of("x") == "queued"  # wanted, so recomputed


def test_want_recomputes_released():
    s = make(A)
    s.update_graph(chain(2), wants=["x1"])
    run_all(s)
    assert s.state_of("x0") == "released"
    s.want(["x0"])
    assert s.state_of("x0") == "queued"


def test_no_stealing_of_tasks_with_big_inputs():
    s = make(A, B)
    s.add_data({"d": [A]}, nbytes={"d": 10_000_000}, wants=True)
    s.update_graph({i: ("spec", ["d"]) for i in range(5)}, wants=range(5))
    assert {w for w, _ in s.assign()} == {A}


def test_suspicious_task_not_starved_by_steady_work():
    s = make(A, B)
    s.update_graph({"bad": ("spec", [])}, wants=["bad"])
    [(w, _)] = s.assign()
    s.remove_worker(w)
    s.add_worker(C)
    n = 0
    ran = False
    for _ in range(50):  # a steady stream of other work
        s.update_graph({n: ("spec", [])}, wants=[n])
        n += 1
        for w2, k in s.assign():
            if k == "bad":
                ran = True
                assert not s.workers[w2].processing - {s.tasks["bad"]}
            else:
                s.task_finished(k, w2)
        if ran:
            break
    assert ran


def test_borrowed_data_is_never_deleted():
    s = make(A)
    s.add_data({"theirs": [A]}, nbytes={"theirs": 8}, wants=True, borrowed=True)
    s.update_graph({"y": ("spec", ["theirs"])}, wants=["y"])
    s.release(["theirs"])
    run_all(s)
    s.release(["y"])
    r = s.take_report()
    assert "theirs" not in r.delete and "y" in r.delete
    assert s.tasks == {}


def test_stored_error_is_deleted_from_its_worker():
    s = make(A)
    s.update_graph({"x": ("spec", [])}, wants=["x"])
    s.assign()
    s.task_erred("x", A, ValueError("no"))
    assert s.take_report().delete == {"x": [A]}
    assert s.state_of("x") == "erred"


# ---------------------------------------------------------------- bounds (issue 8)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_no_workers_fails_queued_tasks_after_the_timeout():
    clock = Clock()
    s = make(no_workers_timeout=30, clock=clock, center="tcp://center:8787")
    s.update_graph({"x": ("spec", []), "y": ("spec", ["x"])}, wants=["y"])
    assert s.assign() == []
    assert s.next_deadline() == 130
    clock.t = 129.9
    s.expire()
    assert s.state_of("x") == "queued"
    clock.t = 130
    s.expire()
    assert s.state_of("x") == "erred" and s.state_of("y") == "erred"
    exc = s.tasks["y"].exception
    assert isinstance(exc, NoWorkersError) and isinstance(exc, TimeoutError)
    assert "no worker is available" in str(exc) and "tcp://center:8787" in str(exc)
    assert "30s" in str(exc) and exc.waited == 30
    assert s.next_deadline() is None
    assert sorted(s.take_report().erred) == ["x", "y"]


def test_a_worker_arriving_in_time_cancels_the_deadline():
    clock = Clock()
    s = make(no_workers_timeout=5, clock=clock)
    s.update_graph({"x": ("spec", [])}, wants=["x"])
    s.assign()
    assert s.next_deadline() == 105
    clock.t = 104
    s.add_worker(A)
    assert s.next_deadline() is None
    clock.t = 200
    s.expire()
    assert run_all(s) == [(A, "x")]


def test_no_deadline_without_queued_work_or_with_timeout_none():
    clock = Clock()
    s = make(no_workers_timeout=5, clock=clock)
    s.assign()
    assert s.next_deadline() is None  # nothing waits
    s = make(no_workers_timeout=None, clock=clock)
    s.update_graph({"x": ("spec", [])}, wants=["x"])
    s.assign()
    clock.t = 10**6
    s.expire()
    assert s.state_of("x") == "queued"


def test_only_worker_gone_mid_compute_fails_after_no_workers_timeout():
    clock = Clock()
    s = make(A, no_workers_timeout=3, clock=clock)
    s.update_graph({"x": ("spec", [])}, wants=["x"])
    [(w, _)] = s.assign()
    s.remove_worker(A)  # dropped by the center: its host vanished
    assert s.state_of("x") == "queued"  # rescheduled, waiting for a worker
    assert s.next_deadline() == 103
    clock.t = 103
    s.expire()
    exc = s.tasks["x"].exception
    # the task may have killed it, or its host vanished: both kinds of error
    assert isinstance(exc, KilledEveryWorker)
    assert isinstance(exc, NoWorkersError) and isinstance(exc, KilledWorker)
    assert exc.workers == [A] and exc.key == "x"
    assert "no worker is available" in str(exc) and A in str(exc)


def test_task_that_killed_every_worker_fails_instead_of_waiting_forever():
    clock = Clock()
    s = make(A, B, allowed_failures=3, no_workers_timeout=3, clock=clock)
    s.update_graph({"bad": ("spec", [])}, wants=["bad"])
    for _ in range(2):
        [(w, _)] = s.assign()
        s.remove_worker(w)
    assert s.state_of("bad") == "queued" and not s.workers
    clock.t += 3
    s.expire()
    exc = s.tasks["bad"].exception
    assert isinstance(exc, KilledWorker) and sorted(exc.workers) == [A, B]
    assert exc.attempts == 2


def test_killed_worker_names_every_worker_it_killed():
    s = make(A, B, C, allowed_failures=3)
    s.update_graph({"bad": ("spec", [])}, wants=["bad"])
    killed = []
    for _ in range(3):
        [(w, _)] = s.assign()
        killed.append(w)
        s.remove_worker(w)
    exc = s.tasks["bad"].exception
    assert type(exc) is KilledWorker
    assert exc.workers == killed and exc.last_worker == killed[-1]
    for w in killed:
        assert w in str(exc)


def test_missing_scattered_input_fails_with_lost_data_error():
    s = make(A, B)
    s.add_data({"d": [A]}, nbytes={"d": 8}, wants=True)
    s.update_graph({"y": ("spec", ["d"])}, wants=["y"])
    s.add_worker(C)
    [(w, k)] = s.assign()
    s.task_missing_data("y", w, ["d"])  # the holder vanished; nobody could serve d
    assert s.state_of("y") == "erred"
    exc = s.tasks["y"].exception
    assert isinstance(exc, LostDataError) and exc.keys == ["d"]


def test_missing_input_recomputed_once_even_if_the_old_holder_answers_late():
    s = make(A, B)
    s.update_graph({"x": ("spec", [])}, wants=["x"])
    [(wx, _)] = s.assign()
    s.task_finished("x", wx)
    other = B if wx == A else A
    s.update_graph({"y": ("spec", ["x"])}, wants=["y"], restrictions={"y": [other]})
    [(wy, _)] = s.assign()
    assert wy == other
    s.take_report()
    s.task_missing_data("y", wy, ["x"])
    assert s.who_has(["x"]) == {"x": []}
    order = run_all(s)
    assert [k for _, k in order] == ["x", "y"]
    # the old holder turns out to have x after all: two holders, one result
    s.task_finished("x", wx)
    report = s.take_report()
    assert report.done.count("x") == 1 and report.done.count("y") == 1
    assert s.state_of("y") == "memory"


def test_worker_back_with_result_after_reschedule_gives_one_result():
    s = make(A, B)
    s.update_graph({"x": ("spec", [])}, wants=["x"])
    [(w, _)] = s.assign()
    other = B if w == A else A
    s.remove_worker(w)  # vanished mid-compute: rescheduled
    [(w2, _)] = s.assign()
    assert w2 == other
    s.task_finished("x", other)
    s.add_worker(w)  # it comes back (re-registered) ...
    s.task_finished("x", w)  # ... with its result
    assert s.state_of("x") == "memory"
    assert sorted(s.who_has(["x"])["x"]) == sorted([A, B])
    assert s.take_report().done == ["x"]
    assert s.processing_count() == 0


def test_missing_data_keeps_a_holder_that_was_not_asked():
    s = make(A, B, C)
    s.update_graph({"x": ("spec", [])}, wants=["x"])
    [(wx, _)] = s.assign()
    s.task_finished("x", wx)
    rest = [w for w in (A, B, C) if w != wx]
    s.update_graph({"y": ("spec", ["x"])}, wants=["y"], restrictions={"y": [rest[0]]})
    [(wy, _)] = s.assign()
    hint = s.dependency_hints("y")
    assert hint == {"x": [wx]}
    s.task_finished("x", rest[1])  # meanwhile another copy appeared (e.g. recomputed)
    s.task_missing_data("y", wy, ["x"], asked=hint)
    assert s.state_of("x") == "memory" and s.who_has(["x"]) == {"x": [rest[1]]}
    assert s.state_of("y") == "queued"  # runs again with the new holder
    assert run_all(s) == [(wy, "y")]


def test_task_restricted_to_gone_workers_fails_after_no_workers_timeout():
    clock = Clock()
    s = make(A, B, no_workers_timeout=4, clock=clock)
    s.update_graph({"x": ("spec", [])}, wants=["x"], restrictions={"x": [C]})
    assert s.assign() == []
    assert s.next_deadline() == 104
    clock.t = 103
    s.expire()
    assert s.state_of("x") == "queued"
    clock.t = 104
    s.expire()
    exc = s.tasks["x"].exception
    assert isinstance(exc, NoWorkersError) and exc.allowed == [C]
    assert C in str(exc) and "no worker is available" in str(exc)


def test_restricted_task_runs_when_its_worker_arrives_in_time():
    clock = Clock()
    s = make(A, no_workers_timeout=4, clock=clock)
    s.update_graph({"x": ("spec", [])}, wants=["x"], restrictions={"x": [C]})
    s.assign()
    clock.t = 103
    s.add_worker(C)
    assert run_all(s) == [(C, "x")]
    clock.t = 200
    s.expire()
    assert s.state_of("x") == "memory" and s.next_deadline() is None


def test_restricted_deadline_does_not_cut_short_the_no_workers_wait():
    clock = Clock()
    s = make(A, no_workers_timeout=4, clock=clock)
    s.update_graph({"r": ("spec", [])}, wants=["r"], restrictions={"r": [C]})
    s.assign()  # r waits for C from t=100
    clock.t = 102
    s.remove_worker(A)
    s.update_graph({"x": ("spec", [])}, wants=["x"])
    s.assign()  # x waits for any worker from t=102
    clock.t = 104
    s.expire()
    assert s.state_of("r") == "erred" and s.state_of("x") == "queued"
    assert s.next_deadline() == 106
    clock.t = 106
    s.expire()
    assert isinstance(s.tasks["x"].exception, NoWorkersError)


def test_missing_data_keeps_a_copy_recomputed_on_the_asking_worker_meanwhile():
    s = make(A, B)
    s.update_graph({"x": ("spec", [])}, wants=["x"])
    [(wx, _)] = s.assign()
    s.task_finished("x", wx)
    other = B if wx == A else A
    s.update_graph({"y": ("spec", ["x"])}, wants=["y"], restrictions={"y": [other]})
    [(wy, _)] = s.assign()
    hint = s.dependency_hints("y")
    # y's fetch from wx hangs; the center drops wx; x is recomputed on `other`
    s.remove_worker(wx)
    assert s.state_of("y") == "processing"
    assert run_all(s) == [(other, "x")]
    # then the stuck fetch gives up: x is on `other` now, y just runs again
    s.task_missing_data("y", wy, ["x"], asked=hint)
    assert s.state_of("x") == "memory" and s.who_has(["x"]) == {"x": [other]}
    assert run_all(s) == [(other, "y")]


def test_listed_but_unreachable_worker_does_not_stop_the_no_workers_clock():
    # the center lists a worker the client cannot reach (a partition between
    # them only): it is tried again and again, but the wait stays bounded
    clock = Clock()
    s = make(A, no_workers_timeout=10, clock=clock)
    s.update_graph({"x": ("spec", [])}, wants=["x"])
    [(w, _)] = s.assign()
    s.remove_worker(A, blame=False)  # could not connect
    assert s.next_deadline() == 110
    for t in (104, 108):
        clock.t = t
        s.add_worker(A)  # listed again
        assert s.assign() == [(A, "x")]
        assert s.next_deadline() == 110
        s.remove_worker(A, blame=False)
    clock.t = 109
    s.add_worker(A)
    s.assign()
    clock.t = 110
    s.expire()  # x was sent to A, still unreached: fails anyway
    exc = s.tasks["x"].exception
    assert isinstance(exc, NoWorkersError) and not isinstance(exc, KilledWorker)
    assert not s.workers[A].processing


def test_unreached_worker_that_connects_or_answers_is_live_again():
    clock = Clock()
    s = make(A, no_workers_timeout=10, clock=clock)
    s.update_graph({"x": ("spec", []), "y": ("spec", [])}, wants=["x", "y"])
    s.assign()
    s.remove_worker(A, blame=False)
    s.add_worker(A)
    assert s.next_deadline() == 110
    s.worker_reached(A)  # a connection to it succeeded
    assert s.next_deadline() is None
    s.assign()
    s.remove_worker(A, blame=False)
    s.add_worker(A)
    out = s.assign()
    assert s.next_deadline() is not None
    assert sorted(k for _, k in out) == ["x", "y"]
    w, k = out[0]
    s.task_finished(k, w)  # an answer proves it too
    assert s.next_deadline() is None
    clock.t = 1000
    s.expire()
    w, k = out[1]
    s.task_finished(k, w)
    assert s.state_of("x") == s.state_of("y") == "memory"
