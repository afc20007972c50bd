"""Recovery: a worker that died, data that went missing.

A mixin of :class:`~distributed_client._state.SchedulerState`. A worker that
dies takes its data and in-flight tasks with it. Its in-flight tasks are
rescheduled and become *suspicious*: a suspicious task runs alone on an
otherwise idle worker, so that a task whose function kills its worker is
blamed exactly; after ``allowed_failures`` deaths it fails with
:class:`~distributed_client.KilledWorker`. Lost results are recomputed from
their definitions; lost data that has no definition (it was scattered)
fails its dependents with :class:`~distributed_client.LostDataError` naming
the keys. A task sent ahead whose inputs were still running on the dead
worker goes back to waiting without blame (it cannot have started).

A worker that reports ``missing-data`` for a compute (it could fetch an
input from no holder) is avoided for that task while another worker may run
it and the holders are still listed (they may be out of reach of that worker
only); when none is left, the client drops those holders for those keys and
recomputes the inputs from their tasks before the dependent runs again (at
most ``MAX_MISSING_DATA`` times per task).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping

from ._tasks import _DEFAULT_RARE, EMPTY, TaskState
from ._transitions import TaskStatus, transition
from .errors import KilledWorker, LostDataError

__all__ = ["RecoveryMixin", "MAX_MISSING_DATA"]

#: how many times a task may come back ``missing-data`` before it fails
MAX_MISSING_DATA = 10

_QUEUED = TaskStatus.queued
_WAITING = TaskStatus.waiting
_MEMORY = TaskStatus.memory
_PROCESSING = TaskStatus.processing
_ERRED = TaskStatus.erred


class RecoveryMixin:
    def remove_worker(self, address: str, blame: bool = True) -> None:
        """A worker is gone: its data is lost, its in-flight tasks go elsewhere.

        With `blame`, its in-flight tasks count it as a death they may have
        caused; pass ``blame=False`` when the tasks never reached it (e.g. the
        connection was refused).
        """
        ws = self.workers.pop(address, None)
        if ws is None:
            return
        self.gone[address] = self.clock()
        if blame:
            self.unreached.discard(address)
        else:
            self.unreached.add(address)
        # 1. data it held
        for ts in list(ws.has):
            ts.who_has.discard(address)
            if not ts.who_has and ts.state == _MEMORY:
                self._lose(ts)
        ws.has.clear()
        # 2. tasks it was running: suspicious, run again (or give up); a task
        # sent ahead whose inputs were still running there cannot have started
        unstarted = {
            ts
            for ts in ws.processing
            if ts.pending
            and any(
                d.state == _PROCESSING and d.processing_on == address
                for d in ts.dependencies
                if d.key in ts.pending
            )
        }
        ws.ahead_queue.clear()
        for ts in sorted(ws.processing, key=lambda t: t.priority):
            ts.processing_on = None
            if ts.state != _PROCESSING:
                continue
            if ts.pending:
                ts.pending = ()
            if blame and ts not in unstarted:
                ts.suspicious += 1
                ts.killed = [*ts.killed, address]
            if ts.suspicious >= self.allowed_failures:
                self._fail(ts, KilledWorker(ts.key, ts.killed, ts.suspicious))
            else:
                transition(ts, "reschedule")
                self._need(ts)
        ws.processing.clear()
        # 3. tasks placed on it but not sent
        placed = [*ws.blocked, *(t[-1] for t in sorted(ws.urgent)), *ws.queue]
        for ts in placed:
            if ts.state == _QUEUED and ts.queued_on == address:
                ts.queued_on = None
                self._requeue(ts)
        ws.queue.clear()
        ws.urgent.clear()
        ws.blocked.clear()
        self._check_no_workers()

    def center_lists(self, ncores: Mapping[str, int]) -> tuple[list[str], list[str]]:
        """The center lists these workers (``{address: cores}``): ``(new, missing)``.

        New ones join (:meth:`add_worker`), except those seen failing less
        than ``gone_grace`` seconds ago (the center may not have noticed yet);
        `missing` are known workers the center no longer lists: the driver
        fails them (:meth:`remove_worker`).
        """
        now = self.clock()
        gone = self.gone
        for address in [a for a, t in gone.items() if a not in ncores or now - t > self.gone_grace]:
            del gone[address]
        new = []
        for address, n in ncores.items():
            if address not in self.workers and address not in gone:
                self.add_worker(address, n or 1)
                new.append(address)
        missing = [a for a in self.workers if a not in ncores]
        return new, missing

    def retry(self, keys: Iterable[Hashable]) -> list:
        """Run failed `keys` (and their failed inputs) again, as if never run.

        Returns the keys reset (those of `keys` that had failed, and their
        failed inputs), so that callers can forget what they knew of them.
        """
        reset = []
        for key in keys:
            ts = self.tasks.get(key)
            if ts is None or ts.state != _ERRED:
                continue
            stack = [ts]
            while stack:
                t = stack.pop()
                if t.state != _ERRED or t.spec is None:
                    continue
                transition(t, "retry")
                reset.append(t.key)
                t.exception = None
                if t._rare is not _DEFAULT_RARE:
                    t.tries = t.suspicious = t.missing_count = 0
                    t.killed = []
                stack.extend(t.dependencies)
            self._need(ts)
        return reset

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
        if ts is None:
            return
        if ts.processing_on == worker:
            self._unprocess(ts)
        missing = list(missing)
        active = ts.state == _PROCESSING
        if active:
            if ts.pending:
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
            if m is not None and m.state == _MEMORY and m.who_has - {worker}
        ]
        if active and held and self._other_candidate(ts, worker):
            # holders alive as far as we know: maybe only `worker` cannot reach them
            ts.avoid_worker(worker)
            transition(ts, "reschedule")
            self._need(ts)
            return
        if ts.avoid:
            ts.avoid = EMPTY
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
            if mts.state == _MEMORY and not mts.who_has:
                self._lose(mts)
        if ts.state == _PROCESSING:
            transition(ts, "reschedule")
            self._need(ts)

    def _other_candidate(self, ts: TaskState, worker: str) -> bool:
        """Whether a worker other than `worker` and those `ts` avoids may run `ts`."""
        avoid = ts.avoid
        return any(ws.address != worker and ws.address not in avoid for ws in self._candidates(ts))

    def key_missing_on(self, key: Hashable, worker: str) -> None:
        """`worker` turned out not to hold `key` (or could not be reached for it)."""
        ts = self.tasks.get(key)
        if ts is None or worker not in ts.who_has:
            return
        ts.who_has.discard(worker)
        ws = self.workers.get(worker)
        if ws is not None:
            ws.has.discard(ts)
        if not ts.who_has and ts.state == _MEMORY:
            self._lose(ts)

    def _lose(self, ts: TaskState) -> None:
        """`ts` was in memory and no copy is left."""
        transition(ts, "lose")
        for d in ts.dependents:
            if d.state == _QUEUED:
                # it was about to run with an input that is gone
                transition(d, "input-lost")
                d.queued_on = None
                self._need(d)
            elif d.state == _WAITING:
                if d.waiting_on:
                    d.waiting_on.add(ts)
                else:
                    d.waiting_on = {ts}
        if ts.needed:
            if ts.spec is None:
                self._fail(ts, LostDataError([ts.key]))
            else:
                self._need(ts)
        else:
            self._maybe_release(ts)
