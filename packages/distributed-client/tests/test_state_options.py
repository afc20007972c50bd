"""The scheduling state honours per-task options (no sockets): retries, priority,
workers / allow_other_workers, resources; cancel of dependents; the transition
table; the thread-safe status snapshot."""

from __future__ import annotations

import pytest

from distributed_client._options import task_options
from distributed_client._state import InvalidTransition, SchedulerState, TaskStatus
from distributed_client._transitions import TRANSITIONS, transition
from distributed_client.errors import CancelledError, NoWorkersError

A, B, C = "tcp://a:1", "tcp://b:1", "tcp://c:1"


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def make(*workers, ncores=1, **kw):
    kw.setdefault("max_in_flight", lambda n: n)  # one task per core: order is visible
    s = SchedulerState(**kw)
    for w in workers:
        s.add_worker(w, ncores)
    return s


def submit(s, key, deps=(), **options):
    opts = {key: task_options(**options)} if options else None
    s.update_graph({key: ("spec", list(deps))}, wants=[key], options=opts)


# ---------------------------------------------------------------- retries


def test_retries_run_a_failing_task_again_and_report_the_last_error():
    s = make(A)
    submit(s, "x", retries=2)
    for attempt in range(3):
        assert s.assign() == [(A, "x")], attempt
        s.task_erred("x", A, ValueError(f"try {attempt}"))
        if attempt < 2:
            assert s.state_of("x") == "queued"
            assert s.take_report().erred == []
    assert s.state_of("x") == "erred"
    assert str(s.tasks["x"].exception) == "try 2"
    assert s.take_report().erred == ["x"]


def test_retries_then_success_and_no_retries_fail_at_once():
    s = make(A)
    submit(s, "x", retries=1)
    submit(s, "y")
    sent = dict((k, w) for w, k in s.assign())
    assert set(sent) == {"x"}  # one core: y waits
    s.task_erred("x", A, ValueError("flaky"))
    assert s.assign() == [(A, "y")]
    s.task_erred("y", A, ValueError("no retries"))
    assert s.state_of("y") == "erred"
    assert s.assign() == [(A, "x")]
    s.task_finished("x", A, nbytes=1)
    assert s.state_of("x") == "memory"


def test_retry_of_an_erred_task_reruns_it():
    s = make(A)
    submit(s, "x")
    s.assign()
    s.task_erred("x", A, ValueError("boom"))
    s.retry(["x"])
    assert s.state_of("x") == "queued" and s.tasks["x"].exception is None
    assert s.assign() == [(A, "x")]


# ---------------------------------------------------------------- priority


def test_higher_priority_runs_first_ties_keep_submission_order():
    s = make()
    for i in range(4):
        submit(s, f"low{i}")
    submit(s, "neg", priority=-1)
    submit(s, "hi1", priority=5)
    submit(s, "hi2", priority=5)
    submit(s, "top", priority=10)
    s.add_worker(A, 1)
    order = []
    while True:
        sent = s.assign()
        if not sent:
            break
        for w, k in sent:
            order.append(k)
            s.task_finished(k, w)
    assert order == ["top", "hi1", "hi2", "low0", "low1", "low2", "low3", "neg"]


def test_priority_task_overtakes_work_already_placed_on_a_worker():
    s = make(A)
    for i in range(5):
        submit(s, f"low{i}")
    assert s.assign() == [(A, "low0")]  # the rest is placed on A's queue
    submit(s, "urgent", priority=1)
    s.task_finished("low0", A)
    assert s.assign() == [(A, "urgent")]


def test_dependents_ready_together_run_by_priority():
    s = make(A)
    s.update_graph(
        {"x": ("spec", []), "a": ("spec", ["x"]), "b": ("spec", ["x"])},
        wants=["a", "b"],
        options={"b": task_options(priority=3)},
    )
    assert s.assign() == [(A, "x")]
    s.task_finished("x", A)
    assert s.assign() == [(A, "b")]


# ---------------------------------------------------------------- workers


def test_workers_option_restricts_and_restrictions_argument_still_works():
    s = make(A, B)
    submit(s, "x", workers=[B])
    s.update_graph({"y": ("spec", [])}, wants=["y"], restrictions={"y": [A]})
    assert sorted(s.assign()) == [(A, "y"), (B, "x")]
    assert s.tasks["y"].options.workers == frozenset({A})


def test_allow_other_workers_prefers_but_does_not_wait():
    s = make(A, B)
    submit(s, "x", workers=[B], allow_other_workers=True)
    assert s.assign() == [(B, "x")]
    submit(s, "y", workers=[C], allow_other_workers=True)  # C is not there
    assert s.assign() == [(A, "y")]
    submit(s, "z", workers=[C])  # a restriction waits for C
    assert s.assign() == []
    assert s.state_of("z") == "queued" and s.tasks["z"] in s.unrunnable


# ---------------------------------------------------------------- resources


def test_resources_run_only_where_declared_and_free():
    s = make(A, B, ncores=4, max_in_flight=lambda n: 10)
    s.set_worker_resources(A, {"GPU": 1})
    for i in range(3):
        submit(s, f"g{i}", resources={"GPU": 1})
    submit(s, "plain")
    sent = s.assign()
    gpu = [(w, k) for w, k in sent if k.startswith("g")]
    assert gpu == [(A, "g0")]  # only one GPU, on A only
    assert s.workers[A].used == {"GPU": 1.0}
    s.task_finished("g0", A)
    assert s.workers[A].used == {}
    assert s.assign() == [(A, "g1")]
    s.task_erred("g1", A, ValueError("x"))
    assert s.assign() == [(A, "g2")]
    s.release(["g2"])  # released while running: its resources are free again
    assert s.workers[A].used == {}


def test_resources_nobody_declares_wait_then_fail_naming_them():
    clock = Clock()
    s = make(A, clock=clock, no_workers_timeout=5)
    submit(s, "x", resources={"GPU": 2})
    assert s.assign() == []
    assert s.next_deadline() == 5
    clock.t = 5
    s.expire()
    assert s.state_of("x") == "erred"
    exc = s.tasks["x"].exception
    assert isinstance(exc, NoWorkersError)
    assert exc.resources == {"GPU": 2.0}
    assert "GPU=2" in str(exc) and "--resources" in str(exc)


def test_resources_declared_later_let_a_waiting_task_run():
    s = make(A)
    submit(s, "x", resources={"GPU": 1})
    assert s.assign() == []
    s.set_worker_resources(A, {"GPU": 1})
    assert s.assign() == [(A, "x")]


def test_resources_freed_when_the_worker_dies():
    s = make(A, B)
    for w in (A, B):
        s.set_worker_resources(w, {"GPU": 1})
    submit(s, "x", resources={"GPU": 1})
    [(w, _)] = s.assign()
    other = B if w == A else A
    s.remove_worker(w)
    assert s.assign() == [(other, "x")]
    assert s.workers[other].used == {"GPU": 1.0}


# ---------------------------------------------------------------- cancel


def test_cancel_cancels_queued_and_waiting_dependents():
    s = make()
    s.update_graph(
        {"x": ("spec", []), "y": ("spec", ["x"]), "z": ("spec", ["y"])}, wants=["x", "y", "z"]
    )
    assert s.state_of("x") == "queued" and s.state_of("y") == "waiting"
    s.cancel(["x"])
    for k in "xyz":
        assert s.state_of(k) == "erred"
        assert isinstance(s.tasks[k].exception, CancelledError)
    assert sorted(s.take_report().erred) == ["x", "y", "z"]


# ---------------------------------------------------------------- the table


def test_states_are_an_enum_and_bad_transitions_raise():
    s = make(A)
    submit(s, "x")
    ts = s.tasks["x"]
    assert ts.state is TaskStatus.queued and ts.state == "queued"
    with pytest.raises(InvalidTransition, match="task 'x' is queued and cannot take event"):
        transition(ts, "finish-twice")
    with pytest.raises(InvalidTransition):
        transition(ts, "lose")  # only data in memory can be lost
    assert ts.state is TaskStatus.queued
    # every state but forgotten can be forgotten; forgotten is final
    states = {s for s, _ in TRANSITIONS}
    assert TaskStatus.forgotten not in states
    assert all((st, "forget") in TRANSITIONS for st in states)


def test_status_of_is_one_read():
    s = make(A)
    assert s.status_of("nope") == (None, None)
    submit(s, "x")
    assert s.status_of("x") == ("queued", None)
    s.assign()
    err = ValueError("boom")
    s.task_erred("x", A, err)
    assert s.status_of("x") == ("erred", err)


def test_center_list_takes_back_a_failed_worker_only_after_the_grace():
    clock = Clock()
    s = make(A, clock=clock)
    s.gone_grace = 5.0
    s.remove_worker(A)
    assert s.center_lists({A: 1, B: 2}) == ([B], [])  # the center may not know yet
    assert A not in s.workers and s.workers[B].ncores == 2
    clock.t = 6.0
    assert s.center_lists({A: 1, B: 2}) == ([A], [])
    assert s.center_lists({A: 1}) == ([], [B])  # the driver fails B
