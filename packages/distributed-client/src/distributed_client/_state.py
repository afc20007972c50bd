"""Client-side task bookkeeping: the one scheduling engine of every client.

A pure, synchronous state machine with no I/O (tested without sockets in
``tests/test_state.py``). ``Pool``, ``get`` and ``Executor`` all feed it tasks;
a thin async driver (``_driver.py``) sends what :meth:`SchedulerState.assign`
decides and feeds the workers' replies back in.

Task states::

    released --needed--> waiting --deps in memory--> queued --assign--> processing
        ^                                                                   |
        |                                  memory <---- finished -----------+
        +---- data lost / no longer needed --+     erred <---- raised/killed/lost

A task is *needed* while a client holds a reference to it (``wants``) or a
dependent that is waiting, queued or processing needs its data. A task whose
data is no longer needed is *released*: its data is deleted from the cluster
but its definition is kept while dependents exist, so that a dependent whose
result is lost can be recomputed. A task with no references and no dependents
is *forgotten*.

Placement: a queued task goes to the worker that holds most of its input
bytes; ties go to the least busy worker (in flight + queued, per core). Each
worker gets at most ``max_in_flight`` tasks at once (``2 * ncores + 1`` at
first; the driver raises it for workers that answer fast or are far away, see
:func:`in_flight_target` and :class:`RoundTrip`, so that their cores never
wait for the client). A worker with
free slots and nothing queued for it takes work queued for the busiest
worker, unless that would move more than ``steal_bytes`` of inputs (and the
queue is not long).

Ahead dispatch (issue 8): when a task starts on a worker whose ``ahead`` is
set (the driver sets it for workers that understand the compute's
``pending`` field), its waiting dependents are queued on that worker's
``ahead_queue``. One whose unfinished inputs all run on that worker (the
others in memory, at most ``steal_bytes`` of them elsewhere) is sent there
at once, in state ``processing`` with ``pending`` naming those inputs; the
worker waits for them. Replies may come back in any order. If an input
fails, the task fails with it; if the worker dies, such a task goes back to
waiting without blame (it cannot have started); a ``missing-data`` reply for
a pending input sends it back to waiting.

Failures: a worker that dies takes its data and in-flight tasks with it. Its
in-flight tasks are rescheduled and become *suspicious*: a suspicious task
runs alone on an otherwise idle worker, so that a task whose function kills
its worker is blamed exactly; after ``allowed_failures`` deaths it fails with
:class:`~distributed_client.KilledWorker`. Lost results are recomputed from
their definitions; lost data that has no definition (it was scattered) fails
its dependents with :class:`~distributed_client.LostDataError` naming the keys.
A worker that reports ``missing-data`` for a compute (it could fetch an
input from no holder) is avoided for that task while another worker may run
it and the holders are still listed (they may be out of reach of that worker
only); when none is left, the client drops those holders for those keys and
recomputes the inputs from their tasks before the dependent runs again
(at most ``MAX_MISSING_DATA`` times per task).

No workers: while there is queued work and no worker at all, the state
counts time on its injected ``clock``. After ``no_workers_timeout`` seconds
(see :meth:`SchedulerState.expire`, which the driver calls at
:meth:`SchedulerState.next_deadline`) the queued tasks fail with
:class:`~distributed_client.NoWorkersError` (or
:class:`~distributed_client.KilledEveryWorker` for a task that was running on
workers that died), and their dependents with them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any

from distributed_core.timeouts import DEFAULTS

from ._options import DEFAULT_OPTIONS, TaskOptions
from .errors import (
    CancelledError,
    KilledEveryWorker,
    KilledWorker,
    LostDataError,
    NoWorkersError,
)

__all__ = [
    "SchedulerState",
    "TaskState",
    "WorkerState",
    "Report",
    "RoundTrip",
    "default_max_in_flight",
    "in_flight_target",
]

#: the most tasks kept in flight per core of one worker, however far away it
#: is and however short its tasks (bounds what a dead worker takes with it and
#: what an idle worker can no longer steal)
MAX_IN_FLIGHT_PER_CORE = 128
#: task times below this (seconds) count as this when sizing the pipeline
MIN_TASK_TIME = 50e-6
#: how many times a task may come back ``missing-data`` before it fails
MAX_MISSING_DATA = 10

#: states whose data a task's dependents are waiting for
_ACTIVE = frozenset({"waiting", "queued", "processing"})


def default_max_in_flight(ncores: int) -> int:
    """How many tasks the client keeps in flight on a new worker with `ncores`.

    ``2 * ncores + 1``: one running per core, one waiting per core for when it
    ends, one spare. The session raises it for workers that answer quickly
    (see ``Session._observe_reply``), so that tiny tasks never leave a core
    waiting for the client; queued work otherwise stays in the client, where
    it can still move to another worker.
    """
    return 2 * ncores + 1


def in_flight_target(ncores: int, rtt: float | None, task_time: float | None) -> int:
    """Tasks to keep in flight on a worker: its cores' share of the bandwidth-delay product.

    While a reply travels back to the client and the next request travels to
    the worker (`rtt` seconds, measured without the worker's compute time),
    each core must still have work: ``rtt / task_time`` more tasks per core,
    twice that for headroom (the worker's own per-task overhead and jitter
    are not in `task_time`), plus one running per core and ``ncores + 1``
    spare. Never below
    :func:`default_max_in_flight`, never above ``MAX_IN_FLIGHT_PER_CORE``
    per core (plus 4). Unknown `rtt` or `task_time` give the default.

    >>> in_flight_target(1, rtt=0.010, task_time=0.001)  # 10 ms away, 1 ms tasks
    23
    >>> in_flight_target(2, rtt=0.0002, task_time=0.05)  # near, long tasks
    5
    """
    floor = default_max_in_flight(ncores)
    if rtt is None or task_time is None:
        return floor
    task_time = max(task_time, MIN_TASK_TIME)
    target = ncores * (1 + 2 * max(rtt, 0.0) / task_time) + ncores + 1
    return int(min(max(floor, target), MAX_IN_FLIGHT_PER_CORE * ncores + 4))


class RoundTrip:
    """Round trip and task time of one worker, from the client's compute replies.

    ``observe(elapsed, duration, now)``: a reply came `elapsed` seconds after
    its request was written; the worker says the function ran `duration`
    seconds. ``elapsed - duration`` is the round trip plus any time the
    request queued at the worker; the smallest of the current and the previous
    `window` seconds is the estimate (queueing only adds, and the window lets
    a route that became slower be noticed). The task time is a moving average
    of `duration`.

    >>> rt = RoundTrip()
    >>> for t in range(5):
    ...     rt.observe(elapsed=0.011 + 0.001 * t, duration=0.001, now=t)
    >>> round(rt.rtt, 4), round(rt.task_time, 4)
    (0.01, 0.001)
    """

    __slots__ = ("window", "rtt", "task_time", "_cur", "_prev", "_start")

    def __init__(self, window: float = 10.0):
        self.window = window
        self.rtt: float | None = None
        self.task_time: float | None = None
        self._cur: float | None = None
        self._prev: float | None = None
        self._start: float | None = None

    def observe(self, elapsed: float, duration: float, now: float) -> None:
        duration = max(0.0, duration)
        sample = max(0.0, elapsed - duration)
        if self._start is None or now - self._start > self.window:
            self._prev, self._cur, self._start = self._cur, None, now
        if self._cur is None or sample < self._cur:
            self._cur = sample
        self.rtt = self._cur if self._prev is None else min(self._cur, self._prev)
        tt = self.task_time
        self.task_time = duration if tt is None else 0.9 * tt + 0.1 * duration


class TaskState:
    """What the client knows about one key."""

    __slots__ = (
        "key",
        "spec",
        "dependencies",
        "dependents",
        "state",
        "who_has",
        "nbytes",
        "wants",
        "waiting_on",
        "processing_on",
        "queued_on",
        "suspicious",
        "killed",
        "stalled_since",
        "exception",
        "restrictions",
        "priority",
        "borrowed",
        "pending",
        "avoid",
        "missing_count",
        "options",
    )

    def __init__(self, key: Hashable, spec: Any, dependencies: Iterable, priority: int = 0):
        self.key = key
        #: what the driver sends to compute this key; None for data that was
        #: put on the cluster from outside (scattered) and cannot be recomputed
        self.spec = spec
        self.dependencies: set[TaskState] = set()
        self.dependents: set[TaskState] = set()
        self.state = "released"
        self.who_has: set[str] = set()
        self.nbytes = 0
        self.wants = 0
        self.waiting_on: set[TaskState] = set()
        self.processing_on: str | None = None
        self.queued_on: str | None = None
        self.suspicious = 0
        #: workers that died while running this task, in order
        self.killed: list[str] = []
        #: since when (``clock()``) it waits for one of its restricted workers
        self.stalled_since: float | None = None
        self.exception: BaseException | None = None
        self.restrictions: frozenset[str] | None = None
        self.priority = priority
        #: data owned by someone else (another client): used, never deleted
        self.borrowed = False
        #: keys of inputs still computing on the same worker when this task
        #: was sent there ahead of them (the compute's ``pending``)
        self.pending: tuple = ()
        #: workers that could not fetch this task's inputs (missing-data)
        #: while their holders were alive: placed elsewhere if possible
        self.avoid: set[str] = set()
        #: how often its compute came back missing-data (bounded)
        self.missing_count = 0
        #: retries, priority, workers, resources (see _options.TaskOptions)
        self.options: TaskOptions = DEFAULT_OPTIONS

    def __repr__(self) -> str:
        return f"<TaskState {self.key!r} {self.state}>"

    @property
    def needed(self) -> bool:
        """True when a client or an active dependent needs this task's result."""
        if self.wants > 0:
            return True
        return any(d.state in _ACTIVE for d in self.dependents)


class WorkerState:
    """A worker as the client sees it: its cores and what it was given."""

    __slots__ = (
        "address",
        "ncores",
        "processing",
        "queue",
        "has",
        "max_in_flight",
        "ahead",
        "ahead_queue",
    )

    def __init__(self, address: str, ncores: int, max_in_flight: int):
        self.address = address
        self.ncores = ncores
        self.max_in_flight = max_in_flight
        #: tasks sent to the worker and not yet answered
        self.processing: set[TaskState] = set()
        #: tasks placed on this worker but not yet sent (stale entries skipped)
        self.queue: deque[TaskState] = deque()
        #: keys the client believes this worker holds
        self.has: set[TaskState] = set()
        #: it understands ``pending`` (tasks may be sent ahead of their inputs)
        self.ahead = False
        #: waiting tasks whose unfinished inputs all run here (stale entries skipped)
        self.ahead_queue: deque[TaskState] = deque()

    def __repr__(self) -> str:
        return (
            f"<WorkerState {self.address} ncores={self.ncores} "
            f"processing={len(self.processing)} queued={len(self.queue)}>"
        )

    @property
    def load(self) -> float:
        return (len(self.processing) + len(self.queue)) / self.ncores

    @property
    def free_slots(self) -> int:
        return self.max_in_flight - len(self.processing)


class Report:
    """What changed since the last :meth:`SchedulerState.take_report`.

    ``done``: keys now in memory; ``erred``: keys that failed (the exception is
    on the task); ``forgotten``: keys no longer known at all; ``delete``:
    ``{key: [workers known to hold it]}`` for data the cluster should drop.
    """

    __slots__ = ("done", "erred", "forgotten", "delete")

    def __init__(self) -> None:
        self.done: list = []
        self.erred: list = []
        self.forgotten: list = []
        self.delete: dict = {}

    def __bool__(self) -> bool:
        return bool(self.done or self.erred or self.forgotten or self.delete)

    def __repr__(self) -> str:
        return f"<Report done={self.done!r} erred={self.erred!r} delete={self.delete!r}>"


class SchedulerState:
    """Tasks, their dependencies, who holds what, and which worker does what next.

    >>> s = SchedulerState()
    >>> s.add_worker("tcp://a:1", ncores=1)
    >>> s.update_graph({"x": ("spec-x", []), "y": ("spec-y", ["x"])}, wants=["y"])
    >>> s.assign()
    [('tcp://a:1', 'x')]
    >>> s.task_finished("x", "tcp://a:1", nbytes=8)
    >>> s.assign()
    [('tcp://a:1', 'y')]
    >>> s.task_finished("y", "tcp://a:1", nbytes=8)
    >>> s.take_report()
    <Report done=['x', 'y'] erred=[] delete={'x': ['tcp://a:1']}>
    """

    def __init__(
        self,
        max_in_flight: Callable[[int], int] = default_max_in_flight,
        allowed_failures: int = DEFAULTS.allowed_failures,
        steal_bytes: int = 100_000,
        no_workers_timeout: float | None = DEFAULTS.no_workers_timeout,
        clock: Callable[[], float] = time.monotonic,
        center: str = "the center",
    ):
        #: tasks placed on workers per assign() call, so that one call stays
        #: short however many tasks are ready (call again while ``unplaced``)
        self.placement_batch = 5000
        #: an idle worker takes queued work from a busy one only if it would
        #: have to fetch at most this many input bytes (or the queue is long)
        self.steal_bytes = steal_bytes
        self.tasks: dict[Hashable, TaskState] = {}
        self.workers: dict[str, WorkerState] = {}
        self.max_in_flight = max_in_flight
        if allowed_failures < 1:
            raise ValueError(f"allowed_failures must be >= 1, got {allowed_failures}")
        self.allowed_failures = allowed_failures
        #: seconds queued work waits while there is no worker (None: forever)
        self.no_workers_timeout = no_workers_timeout
        self.clock = clock
        #: the center's address, for error messages
        self.center = center
        #: since when (``clock()``) there has been work and no live worker
        self.no_workers_since: float | None = None
        #: workers the client failed to reach (``remove_worker(blame=False)``):
        #: listed again by the center, they count as live only once they answer
        self.unreached: set[str] = set()
        #: queued tasks not yet placed on a worker, in priority order
        self.unplaced: deque[TaskState] = deque()
        #: queued tasks that must run alone on an idle worker
        self.isolated: deque[TaskState] = deque()
        #: queued tasks restricted to workers that are not (yet) there
        self.unrunnable: list[TaskState] = []
        #: the earliest ``stalled_since`` in unrunnable (may be early, never late)
        self._stalled_min: float | None = None
        self._report = Report()
        self._counter = 0
        #: where the last task without inputs went, and how much busier (tasks
        #: per core) that worker may be before the next one goes elsewhere
        self._last_root: str | None = None
        self.root_slack = 4
        #: send a task to the worker running its last inputs before they end
        #: (only to workers whose ``ahead`` is set: the driver sets it)
        self.ahead_dispatch = True
        #: how many tasks were sent ahead of their inputs (a statistic)
        self.sent_ahead = 0

    # ------------------------------------------------------------------ queries

    def __repr__(self) -> str:
        return f"<SchedulerState tasks={len(self.tasks)} workers={len(self.workers)}>"

    def state_of(self, key: Hashable) -> str | None:
        ts = self.tasks.get(key)
        return None if ts is None else ts.state

    def who_has(self, keys: Iterable[Hashable]) -> dict:
        """``{key: [workers]}`` as far as the client knows, for known keys."""
        out = {}
        for k in keys:
            ts = self.tasks.get(k)
            if ts is not None:
                out[k] = sorted(ts.who_has)
        return out

    def dependency_hints(self, key: Hashable) -> dict:
        """``{dep: [workers]}`` for the inputs of `key` (the compute ``who_has`` hint)."""
        ts = self.tasks[key]
        return {d.key: list(d.who_has) for d in ts.dependencies}

    def processing_count(self) -> int:
        return sum(len(ws.processing) for ws in self.workers.values())

    def take_report(self) -> Report:
        """Return what changed since the last call and start a fresh report."""
        report, self._report = self._report, Report()
        return report

    # ------------------------------------------------------------------ workers

    def add_worker(self, address: str, ncores: int = 1) -> None:
        """A worker joined (or is learned about); idempotent."""
        ws = self.workers.get(address)
        if ws is None:
            ncores = max(1, int(ncores))
            self.workers[address] = WorkerState(address, ncores, self.max_in_flight(ncores))
            if address not in self.unreached:
                self.no_workers_since = None
            if self.unrunnable:
                self.unplaced.extend(self.unrunnable)
                self.unrunnable = []

    def remove_worker(self, address: str, blame: bool = True) -> None:
        """A worker is gone: its data is lost, its in-flight tasks go elsewhere.

        With `blame`, its in-flight tasks count it as a death they may have
        caused; pass ``blame=False`` when the tasks never reached it (e.g. the
        connection was refused).
        """
        ws = self.workers.pop(address, None)
        if ws is None:
            return
        if blame:
            self.unreached.discard(address)
        else:
            self.unreached.add(address)
        # 1. data it held
        for ts in list(ws.has):
            ts.who_has.discard(address)
            if not ts.who_has and ts.state == "memory":
                self._lose(ts)
        ws.has.clear()
        # 2. tasks it was running: suspicious, run again (or give up); a task
        # sent ahead whose inputs were still running there cannot have started
        unstarted = {
            ts
            for ts in ws.processing
            if ts.pending
            and any(
                d.state == "processing" and d.processing_on == address
                for d in ts.dependencies
                if d.key in ts.pending
            )
        }
        ws.ahead_queue.clear()
        for ts in sorted(ws.processing, key=lambda t: t.priority):
            ts.processing_on = None
            if ts.state != "processing":
                continue
            ts.pending = ()
            if blame and ts not in unstarted:
                ts.suspicious += 1
                ts.killed.append(address)
            if ts.suspicious >= self.allowed_failures:
                self._fail(ts, KilledWorker(ts.key, ts.killed, ts.suspicious))
            else:
                ts.state = "released"
                self._need(ts)
        ws.processing.clear()
        # 3. tasks placed on it but not sent
        for ts in ws.queue:
            if ts.state == "queued" and ts.queued_on == address:
                ts.queued_on = None
                self.unplaced.append(ts)
        ws.queue.clear()
        self._check_no_workers()

    # ------------------------------------------------------------------ graphs

    def add_data(
        self,
        who_has: Mapping[Hashable, Iterable[str]],
        nbytes: Mapping | None = None,
        wants: bool = False,
        borrowed: bool = False,
    ) -> None:
        """Keys already on the cluster (scattered or held elsewhere) and their holders.

        Such keys have no definition: if every holder dies they are lost and
        their dependents fail with :class:`LostDataError`. With `wants`, the
        client holds one reference to each key. `borrowed` data belongs to
        someone else: it is used but never deleted from the cluster.
        """
        nbytes = nbytes or {}
        for key, workers in who_has.items():
            ts = self.tasks.get(key)
            if ts is None:
                ts = self.tasks[key] = TaskState(key, None, (), self._next_priority())
                ts.borrowed = borrowed
            workers = [w for w in workers if w in self.workers]
            for w in workers:
                ts.who_has.add(w)
                self.workers[w].has.add(ts)
            if key in nbytes:
                ts.nbytes = nbytes[key]
            if wants:
                ts.wants += 1
            if ts.who_has:
                if ts.state != "memory":
                    ts.state = "memory"
                    ts.exception = None
                    self._report.done.append(key)
                    self._dependents_may_run(ts)
            elif ts.state in ("released", "memory") and ts.spec is None:
                self._fail(ts, LostDataError([key]))

    def update_graph(
        self,
        tasks: Mapping[Hashable, tuple[Any, Iterable[Hashable]]],
        wants: Iterable[Hashable] = (),
        restrictions: Mapping[Hashable, Iterable[str]] | None = None,
        order: Iterable[Hashable] | None = None,
        options: Mapping[Hashable, TaskOptions] | None = None,
    ) -> None:
        """Add tasks ``{key: (spec, dependency keys)}`` and hold a reference to `wants`.

        Dependencies must be in `tasks` or already known (see :meth:`add_data`);
        a key already known keeps its existing definition (same key, same
        computation). `order` optionally lists keys in the order they should
        run when several are ready (earlier first).
        """
        unknown = {
            d
            for deps in (t[1] for t in tasks.values())
            for d in deps
            if d not in tasks and d not in self.tasks
        }
        if unknown:
            raise KeyError(
                f"tasks depend on keys that are neither in the graph nor known: "
                f"{sorted(map(repr, unknown))}"
            )
        wants = list(wants)
        missing = [k for k in wants if k not in tasks and k not in self.tasks]
        if missing:
            raise KeyError(f"keys {missing!r} are not in the graph")
        prio = {}
        if order is not None:
            base = self._counter
            for i, k in enumerate(order):
                prio[k] = base + i
            self._counter += len(prio)
        new = []
        for key, (spec, deps) in tasks.items():
            ts = self.tasks.get(key)
            if ts is None:
                p = prio[key] if key in prio else self._next_priority()
                ts = self.tasks[key] = TaskState(key, spec, (), p)
                new.append((ts, deps))
            elif (
                ts.spec is None
                and spec is not None
                and ts.state in ("released", "erred")
                and isinstance(ts.exception, LostDataError)
            ):
                # lost external data given a definition after all
                ts.spec = spec
        for ts, deps in new:
            for d in deps:
                dts = self.tasks[d]
                ts.dependencies.add(dts)
                dts.dependents.add(ts)
        if restrictions:
            for key, workers in restrictions.items():
                ts = self.tasks[key]
                if workers is not None:
                    ts.restrictions = frozenset(workers)
        if options:
            for key, opts in options.items():
                self.tasks[key].options = opts
        for key in wants:
            ts = self.tasks[key]
            ts.wants += 1
        # An existing erred task that new dependents now depend on: fail them too.
        for ts, _ in new:
            for dts in ts.dependencies:
                if dts.state == "erred" and ts.state != "erred":
                    self._fail(ts, dts.exception)
        for key in wants:
            self._need(self.tasks[key])

    def add_failed(self, keys: Iterable[Hashable], exception: BaseException) -> None:
        """Hold a reference to each of `keys`, which failed with `exception` (unless known)."""
        for key in keys:
            ts = self.tasks.get(key)
            if ts is None:
                ts = self.tasks[key] = TaskState(key, None, (), self._next_priority())
                ts.wants += 1
                self._fail(ts, exception)
            else:
                ts.wants += 1

    def release(self, keys: Iterable[Hashable]) -> None:
        """Drop one client reference to each key; unneeded data is deleted."""
        for key in keys:
            ts = self.tasks.get(key)
            if ts is None:
                continue
            if ts.wants > 0:
                ts.wants -= 1
            if ts.wants == 0:
                self._maybe_release(ts)

    def cancel(self, keys: Iterable[Hashable]) -> None:
        """Stop computing `keys`: they and their unfinished dependents fail with CancelledError."""
        for key in keys:
            ts = self.tasks.get(key)
            if ts is None or ts.state in ("memory", "erred"):
                continue
            self._fail(ts, CancelledError(f"task {key!r} was cancelled"))

    # ------------------------------------------------------------------ replies

    def task_finished(self, key: Hashable, worker: str, nbytes: int = 0) -> None:
        """`worker` computed `key` and holds the result."""
        if worker in self.unreached:
            self._answered(worker)
        ts = self.tasks.get(key)
        ws = self.workers.get(worker)
        if ws is not None and ts is not None:
            ws.processing.discard(ts)
        if ts is None or ws is None:
            if ws is not None:
                self._report.delete.setdefault(key, []).append(worker)  # forgotten meanwhile
            return
        if ts.processing_on == worker:
            ts.processing_on = None
        if ts.state == "memory":
            ts.who_has.add(worker)
            ws.has.add(ts)
            return
        if ts.state not in _ACTIVE:
            # released or cancelled/erred while running: the result is not wanted
            if not ts.who_has:
                self._report.delete.setdefault(key, []).append(worker)
            return
        if ts.state == "queued":
            ts.queued_on = None
        ts.state = "memory"
        ts.exception = None
        ts.nbytes = nbytes or 0
        ts.who_has.add(worker)
        ws.has.add(ts)
        ts.waiting_on.clear()
        self._report.done.append(key)
        self._dependents_may_run(ts)
        for dts in ts.dependencies:
            if dts.wants == 0:
                self._maybe_release(dts)
        if not ts.needed:
            self._maybe_release(ts)

    def add_replicas(self, worker: str, keys: Iterable[Hashable]) -> None:
        """`worker` kept copies of `keys` it fetched (the compute's ``fetched``)."""
        ws = self.workers.get(worker)
        if ws is None:
            return
        for key in keys:
            ts = self.tasks.get(key)
            if ts is not None and ts.state == "memory":
                ts.who_has.add(worker)
                ws.has.add(ts)
            elif ts is None or not ts.borrowed:
                self._report.delete.setdefault(key, []).append(worker)  # not wanted any more

    def task_erred(self, key: Hashable, worker: str, exception: BaseException) -> None:
        """The task's function raised `exception` on `worker`.

        The worker stored the error under `key`; the client keeps the
        exception, so that copy is deleted.
        """
        if worker in self.unreached:
            self._answered(worker)
        ts = self.tasks.get(key)
        ws = self.workers.get(worker)
        if ws is not None:
            self._report.delete.setdefault(key, []).append(worker)
        if ws is not None and ts is not None:
            ws.processing.discard(ts)
        if ts is None:
            return
        if ts.processing_on == worker:
            ts.processing_on = None
        if ts.state not in _ACTIVE:
            return
        self._fail(ts, exception)

    def task_missing_data(
        self,
        key: Hashable,
        worker: str,
        missing: Iterable[Hashable],
        asked: Mapping[Hashable, Iterable[str]] | None = None,
    ) -> None:
        """`worker` could not fetch `missing` inputs of `key` from anyone.

        First, while the client still lists the holders and some other
        worker may run `key` (within its restrictions), `key` goes to another
        worker and `worker` is avoided for it: the holders may be alive but
        out of `worker`'s reach (a partition between workers). Only when no
        worker is left to try are the holders dropped: `asked` is the
        ``who_has`` hint sent with the compute, and those holders are dropped
        for those keys; a holder that got the key since then (e.g. it was
        recomputed there, maybe on `worker` itself, while the fetch waited
        for a vanished holder) is kept. Without `asked`, every holder is
        dropped. An input left without a holder is recomputed from its task
        (or fails its dependents with :class:`LostDataError` if it was
        scattered), then `key` runs again. After ``MAX_MISSING_DATA`` such
        replies `key` fails with :class:`LostDataError` naming the inputs.
        """
        if worker in self.unreached:
            self._answered(worker)
        ts = self.tasks.get(key)
        ws = self.workers.get(worker)
        if ws is not None and ts is not None:
            ws.processing.discard(ts)
        if ts is None:
            return
        if ts.processing_on == worker:
            ts.processing_on = None
        missing = list(missing)
        active = ts.state == "processing"
        if active:
            ts.pending = ()
            ts.missing_count += 1
            if ts.missing_count > MAX_MISSING_DATA:
                reason = (
                    f"task {key!r} came back missing-data {ts.missing_count} times (last "
                    f"from {worker}): no worker that may run it could fetch these inputs "
                    f"from their holders"
                )
                self._fail(ts, LostDataError(missing, reason))
                return
        held = [
            m
            for m in (self.tasks.get(mk) for mk in missing)
            if m is not None and m.state == "memory" and m.who_has - {worker}
        ]
        if active and held and self._other_candidate(ts, worker):
            # holders alive as far as we know: maybe only `worker` cannot reach them
            ts.avoid.add(worker)
            ts.state = "released"
            self._need(ts)
            return
        ts.avoid.clear()
        for mk in missing:
            mts = self.tasks.get(mk)
            if mts is None:
                continue
            if asked is None:
                gone = set(mts.who_has)
            else:
                gone = set(asked.get(mk, ())) & mts.who_has
            for w in gone:
                mts.who_has.discard(w)
                if w in self.workers:
                    self.workers[w].has.discard(mts)
            if mts.state == "memory" and not mts.who_has:
                self._lose(mts)
        if ts.state == "processing":
            ts.state = "released"
            self._need(ts)

    def _other_candidate(self, ts: TaskState, worker: str) -> bool:
        """Whether a worker other than `worker` and those `ts` avoids may run `ts`."""
        names = self.workers if ts.restrictions is None else ts.restrictions
        return any(w in self.workers and w != worker and w not in ts.avoid for w in names)

    def key_missing_on(self, key: Hashable, worker: str) -> None:
        """`worker` turned out not to hold `key` (or could not be reached for it)."""
        ts = self.tasks.get(key)
        if ts is None or worker not in ts.who_has:
            return
        ts.who_has.discard(worker)
        ws = self.workers.get(worker)
        if ws is not None:
            ws.has.discard(ts)
        if not ts.who_has and ts.state == "memory":
            self._lose(ts)

    def want(self, keys: Iterable[Hashable]) -> None:
        """Add one client reference to each (known) key; released ones are recomputed."""
        for key in keys:
            ts = self.tasks.get(key)
            if ts is None:
                raise KeyError(f"unknown key {key!r}")
            ts.wants += 1
            self._need(ts)

    # ------------------------------------------------------------------ assignment

    def assign(self) -> list[tuple[str, Hashable]]:
        """Decide what to send now: ``[(worker, key), ...]``; marks them processing."""
        if not self.workers:
            self._check_no_workers()
            return []
        if self.unreached and self.no_workers_since is None:
            self._check_no_workers()  # listed again, but not reached yet
        budget = self.placement_batch
        while self.unplaced and budget > 0:
            budget -= 1
            ts = self.unplaced.popleft()
            if ts.state != "queued" or ts.queued_on is not None:
                continue
            if ts.suspicious:
                self.isolated.append(ts)
                continue
            ws = self._choose_worker(ts)
            if ws is None:
                # restricted to workers that are not there: wait for them
                # (at most no_workers_timeout, see expire)
                if ts.stalled_since is None:
                    ts.stalled_since = self.clock()
                if self._stalled_min is None or ts.stalled_since < self._stalled_min:
                    self._stalled_min = ts.stalled_since
                self.unrunnable.append(ts)
                continue
            ts.stalled_since = None
            ts.queued_on = ws.address
            ws.queue.append(ts)
        out: list[tuple[str, Hashable]] = []
        draining = None
        if self.isolated:
            self._assign_isolated(out)
            if self.isolated:
                # let the least busy worker run dry, so a suspicious task gets its turn
                draining = min(self.workers.values(), key=lambda w: len(w.processing))
        # first every worker takes its own queue, then idle slots steal
        for steal in (False, True):
            for ws in self.workers.values():
                if ws.free_slots <= 0 or ws is draining:
                    continue
                if ws.processing and any(t.suspicious for t in ws.processing):
                    continue  # a suspicious task runs alone
                while ws.free_slots > 0:
                    ts = self._steal_for(ws) if steal else self._next_own(ws)
                    if ts is None:
                        break
                    self._start(ts, ws, out)
        # then tasks whose inputs are still running on the same worker
        for ws in self.workers.values():
            if ws.ahead_queue and ws is not draining:
                if not any(t.suspicious for t in ws.processing):
                    self._assign_ahead(ws, out)
        return out

    # ------------------------------------------------------------------ deadlines

    def has_queued_work(self) -> bool:
        """Whether some task waits for a worker to run on."""
        return bool(self.unplaced or self.isolated or self.unrunnable)

    def next_deadline(self) -> float | None:
        """When (on ``clock``) :meth:`expire` has something to do, or None."""
        if self.no_workers_timeout is None:
            return None
        since = [t for t in (self._stalled_min, self.no_workers_since) if t is not None]
        if not since:
            return None
        return min(since) + self.no_workers_timeout

    def expire(self, now: float | None = None) -> None:
        """Fail queued work that waited ``no_workers_timeout`` s with no worker at all.

        A task that was running on workers that died fails with
        :class:`KilledEveryWorker` (a KilledWorker and a NoWorkersError,
        naming them); the others with one :class:`NoWorkersError`. Their
        dependents fail with them.
        """
        now = self.clock() if now is None else now
        self._check_no_workers(now)
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return
        if (
            self._live_worker()
            or self.no_workers_since is None
            or now < self.no_workers_since + self.no_workers_timeout
        ):
            self._expire_unrunnable(now)
            return
        waited = now - self.no_workers_since
        # queued anywhere, or sent to a worker we failed to reach before
        waiting = [*self.unplaced, *self.isolated, *self.unrunnable]
        for ws in self.workers.values():
            waiting.extend(ws.queue)
            waiting.extend(sorted(ws.processing, key=lambda t: t.priority))
            ws.queue.clear()
        queued = list(dict.fromkeys(ts for ts in waiting if ts.state in ("queued", "processing")))
        self.unplaced.clear()
        self.isolated.clear()
        self.unrunnable = []
        self._stalled_min = None
        self.no_workers_since = None
        error = NoWorkersError(self.center, waited, [ts.key for ts in queued[:20]])
        for ts in queued:
            if ts.state not in ("queued", "processing"):
                continue  # failed meanwhile, as a dependent of another
            if ts.killed:
                exc = KilledEveryWorker(ts.key, ts.killed, ts.suspicious, self.center, waited)
                self._fail(ts, exc)
            else:
                self._fail(ts, error)

    def _expire_unrunnable(self, now: float) -> None:
        """Fail tasks that waited too long for the workers they are restricted to."""
        keep = []
        expired = []
        for ts in dict.fromkeys(self.unrunnable):
            if ts.state != "queued":
                continue
            if ts.stalled_since is not None and now - ts.stalled_since >= self.no_workers_timeout:
                expired.append(ts)
            else:
                keep.append(ts)
        self.unrunnable = keep
        self._stalled_min = min(
            (ts.stalled_since for ts in keep if ts.stalled_since is not None), default=None
        )
        for ts in expired:
            if ts.state != "queued":
                continue
            error = NoWorkersError(
                self.center, now - ts.stalled_since, [ts.key], sorted(ts.restrictions or ())
            )
            self._fail(ts, error)

    def _live_worker(self) -> bool:
        """Whether some worker is not known to be unreachable."""
        if not self.unreached:
            return bool(self.workers)
        return any(w not in self.unreached for w in self.workers)

    def worker_reached(self, worker: str) -> None:
        """A connection to `worker` succeeded: it counts as live again."""
        if worker in self.unreached:
            self._answered(worker)

    def _answered(self, worker: str) -> None:
        """`worker`, which we once failed to reach, answered: it is live."""
        self.unreached.discard(worker)
        if worker in self.workers:
            self.no_workers_since = None

    def _check_no_workers(self, now: float | None = None) -> None:
        if self._live_worker():
            self.no_workers_since = None
        elif not self.has_queued_work() and not any(
            ws.processing or ws.queue for ws in self.workers.values()
        ):
            self.no_workers_since = None  # nothing waits
        elif self.no_workers_since is None:
            self.no_workers_since = self.clock() if now is None else now

    # ------------------------------------------------------------------ internals

    def _next_priority(self) -> int:
        self._counter += 1
        return self._counter

    def _choose_worker(self, ts: TaskState) -> WorkerState | None:
        if ts.restrictions is not None:
            candidates = [self.workers[w] for w in ts.restrictions if w in self.workers]
        else:
            candidates = list(self.workers.values())
        if not candidates:
            return None
        if ts.avoid:
            candidates = [w for w in candidates if w.address not in ts.avoid] or candidates
        if ts.dependencies:
            held: dict[str, int] = {}
            for dts in ts.dependencies:
                nb = dts.nbytes or 1
                for w in dts.who_has:
                    held[w] = held.get(w, 0) + nb
            if held:
                best = None
                best_key = None
                for ws in candidates:
                    k = (-held.get(ws.address, 0), ws.load)
                    if best_key is None or k < best_key:
                        best, best_key = ws, k
                return best
        # No input data: keep consecutive tasks together (neighbours in the run
        # order usually meet again downstream, e.g. in a tree reduction) as long
        # as that worker is not much busier than the least busy one.
        best = min(candidates, key=_load)
        last = self.workers.get(self._last_root) if self._last_root else None
        if (
            last is not None
            and last is not best
            and (ts.restrictions is None or last.address in ts.restrictions)
            and last.load - best.load < self.root_slack
        ):
            return last
        self._last_root = best.address
        return best

    def _next_own(self, ws: WorkerState) -> TaskState | None:
        q = ws.queue
        while q:
            ts = q.popleft()
            if ts.state == "queued" and ts.queued_on == ws.address:
                return ts
        return None

    def _steal_for(self, thief: WorkerState) -> TaskState | None:
        victim = None
        longest = 0
        for ws in self.workers.values():
            if ws is not thief and len(ws.queue) > longest:
                victim, longest = ws, len(ws.queue)
        if victim is None:
            return None
        q = victim.queue
        long_queue = len(q) > 4 * victim.max_in_flight
        skipped = []
        found = None
        for _ in range(min(len(q), 20)):
            ts = q.pop()
            if ts.state != "queued" or ts.queued_on != victim.address:
                continue
            if (
                ts.restrictions is not None and thief.address not in ts.restrictions
            ) or thief.address in ts.avoid:
                skipped.append(ts)
                continue
            if not long_queue and self._bytes_missing(ts, thief) > self.steal_bytes:
                skipped.append(ts)  # cheaper to wait for the holder than to move the data
                continue
            found = ts
            break
        q.extend(reversed(skipped))
        return found

    @staticmethod
    def _bytes_missing(ts: TaskState, ws: WorkerState) -> int:
        return sum(d.nbytes for d in ts.dependencies if ws.address not in d.who_has)

    def _assign_isolated(self, out: list) -> None:
        remaining = deque()
        while self.isolated:
            ts = self.isolated.popleft()
            if ts.state != "queued":
                continue
            idle = [
                ws
                for ws in self.workers.values()
                if not ws.processing and (ts.restrictions is None or ws.address in ts.restrictions)
            ]
            if not idle:
                remaining.append(ts)
                continue
            ws = max(
                idle,
                key=lambda w: sum(d.nbytes or 1 for d in ts.dependencies if w.address in d.who_has),
            )
            self._start(ts, ws, out)
        self.isolated = remaining

    def _start(self, ts: TaskState, ws: WorkerState, out: list) -> None:
        ts.state = "processing"
        ts.queued_on = None
        ts.processing_on = ws.address
        ts.pending = ()
        ws.processing.add(ts)
        out.append((ws.address, ts.key))
        if ws.ahead and self.ahead_dispatch:
            for d in ts.dependents:
                if d.state == "waiting":
                    ws.ahead_queue.append(d)

    def _ahead_inputs(self, ts: TaskState, ws: WorkerState) -> tuple | None:
        """The keys `ts` would wait for on `ws` if sent there now, or None if it may not go.

        It may go ahead when each input is in memory (anywhere) or running on
        `ws`, `ws` is allowed and not avoided, and the inputs held elsewhere
        are small (``steal_bytes``).
        """
        if ts.state != "waiting" or ts.spec is None or ts.suspicious:
            return None
        if ws.address in ts.avoid or (
            ts.restrictions is not None and ws.address not in ts.restrictions
        ):
            return None
        pending = []
        far = 0
        for d in ts.dependencies:
            if d.state == "memory":
                if ws.address not in d.who_has:
                    far += d.nbytes
            elif d.state == "processing" and d.processing_on == ws.address:
                pending.append(d.key)
            else:
                return None
        if not pending or far > self.steal_bytes:
            return None
        return tuple(pending)

    def _assign_ahead(self, ws: WorkerState, out: list) -> None:
        q = ws.ahead_queue
        while q and ws.free_slots > 0:
            ts = q.popleft()
            pending = self._ahead_inputs(ts, ws)
            if pending is None:
                continue
            ts.waiting_on.clear()
            self._start(ts, ws, out)
            ts.pending = pending
            self.sent_ahead += 1

    def _need(self, root: TaskState) -> None:
        """Make sure `root` will be computed (it or its inputs may be released or lost)."""
        if root.state != "released":
            return
        # iterative post-order walk over released dependencies
        stack = [(root, False)]
        while stack:
            ts, expanded = stack.pop()
            if ts.state != "released":
                continue
            if ts.spec is None:
                self._fail(ts, LostDataError([ts.key]))
                continue
            if not expanded:
                stack.append((ts, True))
                for dts in ts.dependencies:
                    if dts.state == "released":
                        stack.append((dts, False))
                continue
            erred = next((d for d in ts.dependencies if d.state == "erred"), None)
            if erred is not None:
                self._fail(ts, erred.exception)
                continue
            ts.waiting_on = {d for d in ts.dependencies if d.state != "memory"}
            if ts.waiting_on:
                ts.state = "waiting"
            else:
                self._queue(ts)

    def _queue(self, ts: TaskState) -> None:
        ts.state = "queued"
        ts.queued_on = None
        self.unplaced.append(ts)

    def _dependents_may_run(self, ts: TaskState) -> None:
        ready = []
        for d in ts.dependents:
            if d.state == "waiting":
                d.waiting_on.discard(ts)
                if not d.waiting_on:
                    ready.append(d)
        if len(ready) > 1:
            ready.sort(key=lambda t: t.priority)
        for d in ready:
            self._queue(d)

    def _lose(self, ts: TaskState) -> None:
        """`ts` was in memory and no copy is left."""
        ts.state = "released"
        for d in ts.dependents:
            if d.state == "queued":
                # it was about to run with an input that is gone
                d.state = "released"
                d.queued_on = None
                self._need(d)
            elif d.state == "waiting":
                d.waiting_on.add(ts)
        if ts.needed:
            if ts.spec is None:
                self._fail(ts, LostDataError([ts.key]))
            else:
                self._need(ts)
        else:
            self._maybe_release(ts)

    def _fail(self, root: TaskState, exception: BaseException | None) -> None:
        """`root` and every dependent not yet finished fail with `exception`."""
        stack = [root]
        while stack:
            ts = stack.pop()
            if ts.state in ("erred", "memory") and ts is not root:
                continue
            if ts.state == "processing" and ts.processing_on in self.workers:
                self.workers[ts.processing_on].processing.discard(ts)
                ts.processing_on = None
            ts.state = "erred"
            ts.queued_on = None
            ts.exception = exception
            ts.waiting_on.clear()
            if ts.who_has:
                self._drop_data(ts)
            self._report.erred.append(ts.key)
            stack.extend(ts.dependents)
        # inputs of failed tasks may no longer be needed
        for dts in list(root.dependencies):
            if dts.wants == 0:
                self._maybe_release(dts)

    def _drop_data(self, ts: TaskState) -> None:
        for w in ts.who_has:
            ws = self.workers.get(w)
            if ws is not None:
                ws.has.discard(ts)
        if not ts.borrowed:
            self._report.delete.setdefault(ts.key, []).extend(ts.who_has)
        ts.who_has.clear()

    def _maybe_release(self, ts: TaskState) -> None:
        """Release `ts` if nothing needs it, then forget it if nothing refers to it."""
        stack = [ts]
        while stack:
            ts = stack.pop()
            if ts.needed:
                continue
            if ts.state == "memory":
                if ts.spec is None and ts.dependents:
                    # scattered data cannot be recomputed: keep it while dependents exist
                    continue
                self._drop_data(ts)
                ts.state = "released"
            elif ts.state in ("waiting", "queued", "processing"):
                # nobody wants it any more: stop it (a late result is deleted)
                if ts.state == "processing" and ts.processing_on in self.workers:
                    self.workers[ts.processing_on].processing.discard(ts)
                ts.processing_on = None
                ts.queued_on = None
                ts.waiting_on.clear()
                ts.state = "released"
                stack.extend(d for d in ts.dependencies if d.wants == 0)
            if not ts.dependents and ts.wants == 0:
                self._forget(ts, stack)

    def _forget(self, ts: TaskState, stack: list) -> None:
        if self.tasks.get(ts.key) is not ts:
            return
        if ts.who_has:
            self._drop_data(ts)
        if ts.state == "processing" and ts.processing_on in self.workers:
            self.workers[ts.processing_on].processing.discard(ts)
        del self.tasks[ts.key]
        ts.state = "forgotten"
        self._report.forgotten.append(ts.key)
        for dts in ts.dependencies:
            dts.dependents.discard(ts)
            if dts.wants == 0 and not dts.dependents:
                stack.append(dts)
            elif dts.wants == 0:
                stack.append(dts)
        ts.dependencies = set()


def _load(ws: WorkerState) -> float:
    return ws.load
