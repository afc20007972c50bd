"""Which worker runs which queued task next: placement, stealing, ahead dispatch.

A mixin of :class:`~distributed_client._state.SchedulerState` (the fields it
uses are set there). Policy, no I/O:

* Placement: a queued task goes to the worker that holds most of its input
  bytes; ties go to the least busy worker (in flight + queued, per core).
  Tasks without inputs stay with the worker the previous one went to while
  it is not much busier than the least busy one (``root_slack``).
* Options (:class:`~distributed_client._options.TaskOptions`): ``workers``
  restricts the candidates (with ``allow_other_workers`` they are only
  preferred while one of them is alive); ``resources`` keeps only workers
  that declared at least that much, and a placed task starts only when the
  amount is free there; ``priority``: higher first among ready tasks, ties
  in submission order.
* Each worker gets at most ``max_in_flight`` tasks at once; a worker with
  free slots and nothing queued takes work queued for the busiest worker,
  unless that would move more than ``steal_bytes`` of inputs (and the queue
  is not long).
* Suspicious tasks (their worker died while running them) run alone on an
  idle worker, so that a task that kills its worker is blamed exactly.
* Ahead dispatch (issue 8): when a task starts on a worker whose ``ahead``
  is set, its waiting dependents are queued on that worker's
  ``ahead_queue``; one whose unfinished inputs all run there (the others in
  memory, at most ``steal_bytes`` of them elsewhere) is sent at once with
  ``pending`` naming those inputs.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Hashable, Mapping

from ._tasks import EMPTY, TaskState, WorkerState
from ._transitions import TaskStatus, transition

__all__ = ["PlacementMixin", "order_key"]

_QUEUED = TaskStatus.queued
_WAITING = TaskStatus.waiting
_MEMORY = TaskStatus.memory
_PROCESSING = TaskStatus.processing


def order_key(ts: TaskState) -> tuple:
    """Run order among ready tasks: higher ``options.priority`` first, then submission order."""
    return (-ts.options.priority, ts.priority)


class PlacementMixin:
    # ------------------------------------------------------------------ assignment

    def assign(self) -> list[tuple[str, Hashable]]:
        """Decide what to send now: ``[(worker, key), ...]``; marks them processing."""
        if not self.workers:
            self._check_no_workers()
            return []
        if self.unreached and self.no_workers_since is None:
            self._check_no_workers()  # listed again, but not reached yet
        budget = self.placement_batch
        while (self.unplaced or self.unplaced_urgent) and budget > 0:
            budget -= 1
            ts = self._next_unplaced()
            if ts.state != _QUEUED or ts.queued_on is not None:
                continue
            if ts.suspicious:
                self.isolated.append(ts)
                continue
            ws = self._choose_worker(ts)
            if ws is None:
                # no worker it may use is there: wait for one
                # (at most no_workers_timeout, see expire)
                if ts.stalled_since is None:
                    ts.stalled_since = self.clock()
                if self._stalled_min is None or ts.stalled_since < self._stalled_min:
                    self._stalled_min = ts.stalled_since
                self.unrunnable.append(ts)
                continue
            if ts.stalled_since is not None:
                ts.stalled_since = None
            ts.queued_on = ws.address
            if ts.options.priority:
                heapq.heappush(ws.urgent, (*order_key(ts), ts))
            else:
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

    # ------------------------------------------------------------------ workers

    def add_worker(self, address: str, ncores: int = 1) -> None:
        """A worker joined (or is learned about); idempotent."""
        ws = self.workers.get(address)
        if ws is None:
            ncores = max(1, int(ncores))
            self.workers[address] = WorkerState(address, ncores, self.max_in_flight(ncores))
            if address not in self.unreached:
                self.no_workers_since = None
            self._retry_unrunnable()

    def set_worker_resources(self, address: str, resources: Mapping[str, float] | None) -> None:
        """`address` declared `resources` (``{name: amount}``, its ``identity`` reply)."""
        ws = self.workers.get(address)
        if ws is None:
            return
        ws.resources = {str(k): float(v) for k, v in (resources or {}).items()}
        self._retry_unrunnable()

    def _retry_unrunnable(self) -> None:
        if self.unrunnable:
            for ts in self.unrunnable:
                self._requeue(ts)
            self.unrunnable = []

    def _maybe_compact(self) -> None:
        """Drop stale queue entries once they are many (amortized O(1) per released task)."""
        if self._stale >= max(1000, len(self.tasks)):
            self._compact_queues()

    def _compact_queues(self) -> None:
        """Keep in each queue only the tasks still queued there (no references to released ones)."""
        self._stale = 0

        def live(ts, where=None):
            return ts.state == _QUEUED and ts.queued_on == where

        self.unplaced = deque(t for t in self.unplaced if live(t))
        self.unplaced_urgent = [e for e in self.unplaced_urgent if live(e[-1])]
        heapq.heapify(self.unplaced_urgent)
        self.isolated = deque(t for t in self.isolated if live(t))
        self.unrunnable = [t for t in self.unrunnable if live(t)]
        for ws in self.workers.values():
            a = ws.address
            ws.queue = deque(t for t in ws.queue if live(t, a))
            ws.blocked = deque(t for t in ws.blocked if live(t, a))
            ws.urgent = [e for e in ws.urgent if live(e[-1], a)]
            heapq.heapify(ws.urgent)
            ws.ahead_queue = deque(t for t in ws.ahead_queue if t.state == _WAITING)

    def _next_unplaced(self) -> TaskState:
        """The next ready task to place: positive priorities, then the rest in order."""
        urgent = self.unplaced_urgent
        if urgent and (urgent[0][0] < 0 or not self.unplaced):
            return heapq.heappop(urgent)[-1]
        return self.unplaced.popleft()

    # ------------------------------------------------------------------ internals

    def _candidates(self, ts: TaskState) -> list[WorkerState]:
        opts = ts.options
        workers = self.workers
        if opts.workers is not None:
            candidates = [workers[w] for w in opts.workers if w in workers]
            if opts.allow_other_workers and not candidates:
                candidates = list(workers.values())
        else:
            candidates = list(workers.values())
        if opts.resources:
            need = opts.resources
            candidates = [ws for ws in candidates if ws.declares(need)]
        return candidates

    def _may_run_on(self, ts: TaskState, ws: WorkerState) -> bool:
        """Whether `ts` may go to `ws` now (restrictions, avoid, free resources)."""
        opts = ts.options
        if opts.workers is not None and ws.address not in opts.workers:
            if not opts.allow_other_workers:
                return False
        if ws.address in ts.avoid:
            return False
        return not opts.resources or ws.fits(opts.resources)

    def _choose_worker(self, ts: TaskState) -> WorkerState | None:
        candidates = self._candidates(ts)
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
            and last in candidates
            and last.load - best.load < self.root_slack
        ):
            return last
        self._last_root = best.address
        return best

    def _next_own(self, ws: WorkerState) -> TaskState | None:
        address = ws.address
        urgent = ws.urgent
        while urgent and urgent[0][0] < 0:  # positive priority first
            ts = heapq.heappop(urgent)[-1]
            if ts.state == _QUEUED and ts.queued_on == address:
                if self._startable(ts, ws):
                    return ts
        blocked = ws.blocked
        while blocked:  # placed earlier, waiting for free resources here
            ts = blocked[0]
            if ts.state != _QUEUED or ts.queued_on != address:
                blocked.popleft()
            elif ws.fits(ts.options.resources):
                return blocked.popleft()
            else:
                break
        q = ws.queue
        while q:
            ts = q.popleft()
            if ts.state == _QUEUED and ts.queued_on == address and self._startable(ts, ws):
                return ts
        while urgent:
            ts = heapq.heappop(urgent)[-1]
            if ts.state == _QUEUED and ts.queued_on == address and self._startable(ts, ws):
                return ts
        return None

    @staticmethod
    def _startable(ts: TaskState, ws: WorkerState) -> bool:
        """True if `ts`'s resources are free on `ws`; otherwise it waits in ``ws.blocked``."""
        need = ts.options.resources
        if not need or ws.fits(need):
            return True
        ws.blocked.append(ts)
        return False

    def _steal_for(self, thief: WorkerState) -> TaskState | None:
        victim = None
        longest = 0
        for ws in self.workers.values():
            n = len(ws.queue) + len(ws.blocked)
            if ws is not thief and n > longest:
                victim, longest = ws, n
        if victim is None:
            return None
        # its own queue, else the tasks waiting there for resources the thief has free
        q = victim.queue or victim.blocked
        long_queue = len(q) > 4 * victim.max_in_flight
        skipped = []
        found = None
        for _ in range(min(len(q), 20)):
            ts = q.pop()
            if ts.state != _QUEUED or ts.queued_on != victim.address:
                continue
            if not self._may_run_on(ts, thief) or (
                ts.options.workers is not None
                and thief.address not in ts.options.workers
                and any(w in self.workers for w in ts.options.workers)
            ):
                skipped.append(ts)  # restricted, avoided, or preferred elsewhere
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
            if ts.state != _QUEUED:
                continue
            idle = [
                ws for ws in self.workers.values() if not ws.processing and self._may_run_on(ts, ws)
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

    def _start(self, ts: TaskState, ws: WorkerState, out: list, event: str = "start") -> None:
        transition(ts, event)
        ts.queued_on = None
        ts.processing_on = ws.address
        if ts.pending:
            ts.pending = ()
        ws.processing.add(ts)
        need = ts.options.resources
        if need:
            used = ws.used
            for name, amount in need.items():
                used[name] = used.get(name, 0.0) + amount
        out.append((ws.address, ts.key))
        if ws.ahead and self.ahead_dispatch:
            for d in ts.dependents:
                if d.state == _WAITING:
                    ws.ahead_queue.append(d)

    def _unprocess(self, ts: TaskState) -> None:
        """`ts` no longer runs on its worker: free its slot and resources."""
        ws = self.workers.get(ts.processing_on) if ts.processing_on else None
        ts.processing_on = None
        if ws is None:
            return
        ws.processing.discard(ts)
        need = ts.options.resources
        if need:
            used = ws.used
            for name, amount in need.items():
                left = used.get(name, 0.0) - amount
                if left > 1e-9:
                    used[name] = left
                else:
                    used.pop(name, None)

    def _ahead_inputs(self, ts: TaskState, ws: WorkerState) -> tuple | None:
        """The keys `ts` would wait for on `ws` if sent there now, or None if it may not go.

        It may go ahead when each input is in memory (anywhere) or running on
        `ws`, `ws` is allowed, not avoided and has its resources free, and
        the inputs held elsewhere are small (``steal_bytes``).
        """
        if ts.state != _WAITING or ts.spec is None or ts.suspicious:
            return None
        if not self._may_run_on(ts, ws):
            return None
        pending = []
        far = 0
        for d in ts.dependencies:
            if d.state == _MEMORY:
                if ws.address not in d.who_has:
                    far += d.nbytes
            elif d.state == _PROCESSING and d.processing_on == ws.address:
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
            ts.waiting_on = EMPTY
            self._start(ts, ws, out, "start-ahead")
            ts.pending = pending
            self.sent_ahead += 1


def _load(ws: WorkerState) -> float:
    return ws.load
