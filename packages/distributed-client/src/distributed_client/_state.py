"""Client-side task bookkeeping: the one scheduling engine of every client.

A pure, synchronous state machine with no I/O (tested without sockets in
``tests/test_state*.py``). ``Pool``, ``get`` and ``Executor`` all feed it
tasks; the async driver (``_session.py``) sends what
:meth:`SchedulerState.assign` decides and feeds the workers' replies back in.

The engine is split by job:

* :mod:`._transitions`: the task states (:class:`TaskStatus`) and the one
  table of allowed transitions; any other change raises
  :class:`~._transitions.InvalidTransition`.
* :mod:`._tasks`: the records (:class:`TaskState`, :class:`WorkerState`,
  :class:`Report`), kept small.
* this module: graphs, references, replies, failure and release.
* :mod:`._placement`: which worker runs what next (options, stealing,
  ahead dispatch); :mod:`._recovery`: dead workers and missing data;
  :mod:`._deadlines`: giving up when no usable worker is there;
  :mod:`._pipeline`: how many tasks each worker gets at once.

A task is *needed* while a client holds a reference to it (``wants``) or a
dependent that is waiting, queued or processing needs its data. A task whose
data is no longer needed is *released*: its data is deleted from the cluster
but its definition is kept while dependents exist, so that a dependent whose
result is lost can be recomputed. A task with no references and no dependents
is *forgotten*. Releasing n keys costs O(n) plus their dependencies.

Per-task options (:class:`~distributed_client._options.TaskOptions`):
``retries`` (a task that raised runs again up to that many times; the last
error is the one reported), ``priority``, ``workers`` /
``allow_other_workers`` and ``resources`` (see :mod:`._placement`).
:meth:`SchedulerState.cancel` fails a task and its unfinished dependents
with :class:`~distributed_client.CancelledError`.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from distributed_core.timeouts import DEFAULTS

from ._deadlines import DeadlinesMixin
from ._options import TaskOptions
from ._pipeline import RoundTrip, default_max_in_flight, in_flight_target
from ._placement import PlacementMixin, order_key
from ._recovery import MAX_MISSING_DATA, RecoveryMixin
from ._tasks import ACTIVE, EMPTY, Report, TaskState, WorkerState
from ._transitions import InvalidTransition, TaskStatus, transition
from .errors import CancelledError, LostDataError

__all__ = [
    "SchedulerState",
    "TaskState",
    "TaskStatus",
    "WorkerState",
    "Report",
    "RoundTrip",
    "InvalidTransition",
    "MAX_MISSING_DATA",
    "default_max_in_flight",
    "in_flight_target",
]

_RELEASED = TaskStatus.released
_WAITING = TaskStatus.waiting
_QUEUED = TaskStatus.queued
_PROCESSING = TaskStatus.processing
_MEMORY = TaskStatus.memory
_ERRED = TaskStatus.erred


class SchedulerState(PlacementMixin, RecoveryMixin, DeadlinesMixin):
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
        #: workers seen failing (-> when): not taken back from the center's
        #: list for ``gone_grace`` seconds (it may not have noticed yet)
        self.gone: dict[str, float] = {}
        self.gone_grace = 5.0
        #: queued tasks not yet placed on a worker, in submission order
        self.unplaced: deque[TaskState] = deque()
        #: the same for tasks with a ``priority`` option: a heap of
        #: ``(-priority, submission order, task)``
        self.unplaced_urgent: list = []
        #: queued tasks that must run alone on an idle worker
        self.isolated: deque[TaskState] = deque()
        #: queued tasks no present worker may run (workers=, resources=)
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
        #: queue entries left behind by tasks that stopped being queued (see
        #: _compact_queues: released work must not stay referenced)
        self._stale = 0

    # ------------------------------------------------------------------ queries

    def __repr__(self) -> str:
        return f"<SchedulerState tasks={len(self.tasks)} workers={len(self.workers)}>"

    def state_of(self, key: Hashable) -> str | None:
        ts = self.tasks.get(key)
        return None if ts is None else ts.state

    def status_of(self, key: Hashable) -> tuple[TaskStatus | None, BaseException | None]:
        """``(state, exception)`` of `key`, safe to call from any thread.

        One dictionary lookup (atomic) and two reads of the same record: a
        task's exception is always set before its state becomes ``erred``,
        so a reader in another thread never sees ``erred`` without the
        exception, nor a ``KeyError`` between a check and a lookup.
        ``(None, None)`` for a key the client does not know (yet).
        """
        ts = self.tasks.get(key)
        if ts is None:
            return None, None
        state = ts.state
        return state, (ts.exception if state == _ERRED else None)

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
                if borrowed:
                    ts.borrowed = True
            workers = [w for w in workers if w in self.workers]
            for w in workers:
                ts.add_who_has(w)
                self.workers[w].has.add(ts)
            if key in nbytes:
                ts.nbytes = nbytes[key]
            if wants:
                ts.wants += 1
            if ts.who_has:
                if ts.state != _MEMORY:
                    if ts.state == _PROCESSING:
                        self._unprocess(ts)
                    ts.queued_on = None
                    if ts.waiting_on:
                        ts.waiting_on = EMPTY
                    transition(ts, "data")
                    ts.exception = None
                    self._report.done.append(key)
                    self._dependents_may_run(ts)
            elif ts.state in (_RELEASED, _MEMORY) and ts.spec is None:
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
        run when several are ready (earlier first). `options` gives tasks their
        :class:`~distributed_client._options.TaskOptions`; `restrictions`
        (``{key: workers}``) is the older way to say ``options.workers``.
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
                and ts.state in (_RELEASED, _ERRED)
                and isinstance(ts.exception, LostDataError)
            ):
                # lost external data given a definition after all
                ts.spec = spec
        for ts, deps in new:
            for d in deps:
                ts.add_dependency(self.tasks[d])
        if options:
            for key, opts in options.items():
                self.tasks[key].options = opts
        if restrictions:
            for key, workers in restrictions.items():
                if workers is not None:
                    ts = self.tasks[key]
                    ts.options = replace(ts.options, workers=frozenset(workers))
        for key in wants:
            ts = self.tasks[key]
            ts.wants += 1
        # An existing erred task that new dependents now depend on: fail them too.
        for ts, _ in new:
            for dts in ts.dependencies:
                if dts.state == _ERRED and ts.state != _ERRED:
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
        self._maybe_compact()

    def cancel(self, keys: Iterable[Hashable]) -> None:
        """Stop computing `keys`: they and their unfinished dependents fail with CancelledError."""
        for key in keys:
            ts = self.tasks.get(key)
            if ts is None or ts.state in (_MEMORY, _ERRED):
                continue
            self._fail(ts, CancelledError(f"task {key!r} was cancelled"))
        self._maybe_compact()

    # ------------------------------------------------------------------ replies

    def task_finished(self, key: Hashable, worker: str, nbytes: int = 0) -> None:
        """`worker` computed `key` and holds the result."""
        if worker in self.unreached:
            self._answered(worker)
        ts = self.tasks.get(key)
        ws = self.workers.get(worker)
        if ts is None or ws is None:
            if ws is not None:
                self._report.delete.setdefault(key, []).append(worker)  # forgotten meanwhile
            return
        if ts.processing_on == worker:
            self._unprocess(ts)
        if ts.state == _MEMORY:
            ts.add_who_has(worker)
            ws.has.add(ts)
            return
        if ts.state not in ACTIVE:
            # released or cancelled/erred while running: the result is not wanted
            if not ts.who_has:
                self._report.delete.setdefault(key, []).append(worker)
            return
        if ts.state == _PROCESSING and ts.processing_on is not None:
            self._unprocess(ts)  # it ran twice (e.g. stolen); the other copy is kept
        ts.queued_on = None
        transition(ts, "finish")
        ts.exception = None
        ts.nbytes = nbytes or 0
        ts.add_who_has(worker)
        ws.has.add(ts)
        if ts.waiting_on:
            ts.waiting_on = EMPTY
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
            if ts is not None and ts.state == _MEMORY:
                ts.add_who_has(worker)
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
        if ts is None:
            return
        if ts.processing_on == worker:
            self._unprocess(ts)
        elif ts.state in (_WAITING, _PROCESSING):
            return  # a late reply: it was sent back to wait, or runs elsewhere now
        if ts.state not in ACTIVE:
            return
        if ts.state == _PROCESSING and ts.tries < ts.options.retries and ts.spec is not None:
            # it may run again (options.retries): the last try's error is the one reported
            ts.tries += 1
            if ts.pending:
                ts.pending = ()
            transition(ts, "retry")
            self._need(ts)
            # dependents sent ahead of it would fail with this try's error: they wait again
            for d in ts.dependents:
                if d.state == _PROCESSING and key in d.pending:
                    self._unprocess(d)
                    d.pending = ()
                    transition(d, "reschedule")
                    self._need(d)
            return
        self._fail(ts, exception)

    def want(self, keys: Iterable[Hashable]) -> None:
        """Add one client reference to each (known) key; released ones are recomputed."""
        for key in keys:
            ts = self.tasks.get(key)
            if ts is None:
                raise KeyError(f"unknown key {key!r}")
            ts.wants += 1
            self._need(ts)

    # ------------------------------------------------------------------ internals

    def _next_priority(self) -> int:
        self._counter += 1
        return self._counter

    def _need(self, root: TaskState) -> None:
        """Make sure `root` will be computed (it or its inputs may be released or lost)."""
        if root.state != _RELEASED:
            return
        # iterative post-order walk over released dependencies
        stack = [(root, False)]
        while stack:
            ts, expanded = stack.pop()
            if ts.state != _RELEASED:
                continue
            if ts.spec is None:
                self._fail(ts, LostDataError([ts.key]))
                continue
            if not expanded:
                stack.append((ts, True))
                for dts in ts.dependencies:
                    if dts.state == _RELEASED:
                        stack.append((dts, False))
                continue
            erred = next((d for d in ts.dependencies if d.state == _ERRED), None)
            if erred is not None:
                self._fail(ts, erred.exception)
                continue
            waiting_on = [d for d in ts.dependencies if d.state != _MEMORY]
            if waiting_on:
                ts.waiting_on = set(waiting_on)
                transition(ts, "wait")
            else:
                if ts.waiting_on:
                    ts.waiting_on = EMPTY
                self._queue(ts)

    def _queue(self, ts: TaskState) -> None:
        transition(ts, "ready")
        ts.queued_on = None
        self._requeue(ts)

    def _requeue(self, ts: TaskState) -> None:
        """Put queued `ts` among the tasks to place (by ``options.priority``, then order)."""
        if ts.options.priority:
            heapq.heappush(self.unplaced_urgent, (*order_key(ts), ts))
        else:
            self.unplaced.append(ts)

    def _dependents_may_run(self, ts: TaskState) -> None:
        ready = []
        for d in ts.dependents:
            if d.state == _WAITING:
                if d.waiting_on:
                    d.waiting_on.discard(ts)
                if not d.waiting_on:
                    ready.append(d)
        if len(ready) > 1:
            ready.sort(key=order_key)
        for d in ready:
            self._queue(d)

    def _fail(self, root: TaskState, exception: BaseException | None) -> None:
        """`root` and every dependent not yet finished fail with `exception`."""
        stack = [root]
        while stack:
            ts = stack.pop()
            if ts.state in (_ERRED, _MEMORY) and ts is not root:
                continue
            if ts.state == _QUEUED:
                self._stale += 1
            if ts.processing_on is not None:
                self._unprocess(ts)
            ts.queued_on = None
            ts.exception = exception  # before the state: see status_of
            transition(ts, "fail")
            if ts.waiting_on:
                ts.waiting_on = EMPTY
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
        ts.who_has = EMPTY

    def _maybe_release(self, ts: TaskState) -> None:
        """Release `ts` if nothing needs it, then forget it if nothing refers to it."""
        stack = [ts]
        while stack:
            ts = stack.pop()
            if ts.needed:
                continue
            if ts.state == _MEMORY:
                if ts.spec is None and ts.dependents:
                    # scattered data cannot be recomputed: keep it while dependents exist
                    continue
                self._drop_data(ts)
                transition(ts, "release")
            elif ts.state in ACTIVE:
                # nobody wants it any more: stop it (a late result is deleted)
                if ts.state == _QUEUED:
                    self._stale += 1
                if ts.processing_on is not None:
                    self._unprocess(ts)
                ts.queued_on = None
                if ts.waiting_on:
                    ts.waiting_on = EMPTY
                transition(ts, "release")
                stack.extend(d for d in ts.dependencies if d.wants == 0)
            if not ts.dependents and ts.wants == 0:
                self._forget(ts, stack)

    def _forget(self, ts: TaskState, stack: list) -> None:
        if self.tasks.get(ts.key) is not ts:
            return
        if ts.who_has:
            self._drop_data(ts)
        if ts.processing_on is not None:
            self._unprocess(ts)
        del self.tasks[ts.key]
        transition(ts, "forget")
        self._report.forgotten.append(ts.key)
        for dts in ts.dependencies:
            dts.dependents.discard(ts)
            if dts.wants == 0 and not dts.dependents:
                stack.append(dts)
            elif dts.wants == 0:
                stack.append(dts)
        ts.dependencies = EMPTY
