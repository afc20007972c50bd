"""When queued work gives up: no live worker, or none a task may use.

A mixin of :class:`~distributed_client._state.SchedulerState`. While there
is queued work and no worker at all, the state counts time on its injected
``clock``. After ``no_workers_timeout`` seconds (see :meth:`expire`, which
the driver calls at :meth:`next_deadline`) the queued tasks fail with
:class:`~distributed_client.NoWorkersError` (or
:class:`~distributed_client.KilledEveryWorker` for a task that was running
on workers that died), and their dependents with them. A task that waits
for a worker it may use (``workers=`` without ``allow_other_workers``, or
``resources=`` no live worker declared) fails the same way after that long,
with an error naming the workers or the resources.
"""

from __future__ import annotations

from ._transitions import TaskStatus
from .errors import KilledEveryWorker, NoWorkersError

__all__ = ["DeadlinesMixin"]

_QUEUED = TaskStatus.queued
_PROCESSING = TaskStatus.processing


class DeadlinesMixin:
    # ------------------------------------------------------------------ deadlines

    def has_queued_work(self) -> bool:
        """Whether some task waits for a worker to run on."""
        return bool(self.unplaced or self.unplaced_urgent or self.isolated or self.unrunnable)

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
        waiting = [*self.unplaced, *(t[-1] for t in self.unplaced_urgent)]
        waiting += [*self.isolated, *self.unrunnable]
        for ws in self.workers.values():
            waiting.extend(ws.blocked)
            waiting.extend(t[-1] for t in ws.urgent)
            waiting.extend(ws.queue)
            waiting.extend(sorted(ws.processing, key=lambda t: t.priority))
            ws.queue.clear()
            ws.urgent.clear()
            ws.blocked.clear()
        queued = list(dict.fromkeys(ts for ts in waiting if ts.state in (_QUEUED, _PROCESSING)))
        self.unplaced.clear()
        self.unplaced_urgent.clear()
        self.isolated.clear()
        self.unrunnable = []
        self._stalled_min = None
        self.no_workers_since = None
        error = NoWorkersError(self.center, waited, [ts.key for ts in queued[:20]])
        for ts in queued:
            if ts.state not in (_QUEUED, _PROCESSING):
                continue  # failed meanwhile, as a dependent of another
            if ts.killed:
                exc = KilledEveryWorker(ts.key, ts.killed, ts.suspicious, self.center, waited)
                self._fail(ts, exc)
            else:
                self._fail(ts, error)

    def _expire_unrunnable(self, now: float) -> None:
        """Fail tasks that waited too long for a worker they may use (workers=, resources=)."""
        keep = []
        expired = []
        for ts in dict.fromkeys(self.unrunnable):
            if ts.state != _QUEUED:
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
            if ts.state != _QUEUED:
                continue
            error = NoWorkersError(
                self.center,
                now - ts.stalled_since,
                [ts.key],
                sorted(ts.restrictions or ()),
                dict(ts.options.resources or {}),
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
