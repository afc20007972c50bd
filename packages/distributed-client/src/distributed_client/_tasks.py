"""The records of the scheduling state: one per task, one per worker, and the report.

Kept small on purpose (issue 10: at most 600 bytes of client memory per
pending future): ``__slots__`` everywhere; the sets of a task (inputs,
dependents, holders, what it waits on) start as one shared empty frozenset
and become a ``set`` on their first element; the fields only a task that
failed, was retried or moved needs live in a :class:`_Rare` record made on
first use.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable
from typing import Any

from ._options import DEFAULT_OPTIONS, TaskOptions
from ._transitions import TaskStatus

__all__ = ["TaskState", "WorkerState", "Report", "EMPTY", "ACTIVE"]

#: the empty set every task starts with (replaced by a ``set`` on first add)
EMPTY: frozenset = frozenset()

#: states whose data a task's dependents are waiting for
ACTIVE = frozenset({TaskStatus.waiting, TaskStatus.queued, TaskStatus.processing})


class _Rare:
    """Fields most tasks never change: made on first write (see TaskState's properties)."""

    __slots__ = (
        "suspicious",
        "killed",
        "stalled_since",
        "borrowed",
        "pending",
        "avoid",
        "missing_count",
        "tries",
    )

    def __init__(self) -> None:
        self.suspicious = 0
        self.killed: list[str] = []
        self.stalled_since: float | None = None
        self.borrowed = False
        self.pending: tuple = ()
        self.avoid: set[str] = set()
        self.missing_count = 0
        self.tries = 0


_DEFAULT_RARE = _Rare()
_DEFAULT_RARE.killed = ()  # type: ignore[assignment]  (never written: shared)
_DEFAULT_RARE.avoid = EMPTY  # type: ignore[assignment]


def _rare_field(name: str, doc: str) -> property:
    def get(self):
        return getattr(self._rare, name)

    def set_(self, value):
        rare = self._rare
        if rare is _DEFAULT_RARE:
            rare = self._rare = _Rare()
        setattr(rare, name, value)

    return property(get, set_, doc=doc)


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
        "exception",
        "priority",
        "options",
        "_rare",
    )

    def __init__(self, key: Hashable, spec: Any, dependencies: Iterable = (), priority: int = 0):
        self.key = key
        #: what the driver sends to compute this key; None for data that was
        #: put on the cluster from outside (scattered) and cannot be recomputed
        self.spec = spec
        self.dependencies: set[TaskState] | frozenset = EMPTY
        self.dependents: set[TaskState] | frozenset = EMPTY
        self.state: TaskStatus = TaskStatus.released
        #: workers the client believes hold the result
        self.who_has: set[str] | frozenset = EMPTY
        self.nbytes = 0
        #: references held by the client (futures, RemoteData, get calls)
        self.wants = 0
        #: inputs not in memory yet (while waiting)
        self.waiting_on: set[TaskState] | frozenset = EMPTY
        self.processing_on: str | None = None
        self.queued_on: str | None = None
        self.exception: BaseException | None = None
        #: submission order (smaller runs first among equal ``options.priority``)
        self.priority = priority
        #: retries, priority, workers, resources (see _options.TaskOptions)
        self.options: TaskOptions = DEFAULT_OPTIONS
        self._rare = _DEFAULT_RARE

    #: how many workers died while running it (it then runs alone)
    suspicious = _rare_field("suspicious", "deaths of workers running this task")
    #: workers that died while running this task, in order
    killed = _rare_field("killed", "workers that died while running it, in order")
    #: since when (``clock()``) it waits for a worker it may run on
    stalled_since = _rare_field("stalled_since", "since when it waits for a usable worker")
    #: data owned by someone else (another client): used, never deleted
    borrowed = _rare_field("borrowed", "data of someone else: never deleted")
    #: keys of inputs still computing on the same worker when this task
    #: was sent there ahead of them (the compute's ``pending``)
    pending = _rare_field("pending", "inputs it was sent ahead of")
    #: workers that could not fetch its inputs (missing-data) while their
    #: holders were alive: placed elsewhere if possible
    avoid = _rare_field("avoid", "workers to avoid for it")
    #: how often its compute came back missing-data (bounded)
    missing_count = _rare_field("missing_count", "missing-data replies so far")
    #: how often it was run again after it raised (``options.retries`` bounds it)
    tries = _rare_field("tries", "retries used")

    def __repr__(self) -> str:
        return f"<TaskState {self.key!r} {self.state!s}>"

    @property
    def restrictions(self) -> frozenset[str] | None:
        """The workers it may run on (None: any; a preference does not restrict)."""
        opts = self.options
        if opts.workers is None or opts.allow_other_workers:
            return None
        return opts.workers

    @property
    def needed(self) -> bool:
        """True when a client or an active dependent needs this task's result."""
        if self.wants > 0:
            return True
        return any(d.state in ACTIVE for d in self.dependents)

    def add_who_has(self, worker: str) -> None:
        if self.who_has:
            self.who_has.add(worker)
        else:
            self.who_has = {worker}

    def add_dependency(self, dts: TaskState) -> None:
        """`dts` is an input of this task (both directions are recorded)."""
        if self.dependencies:
            self.dependencies.add(dts)
        else:
            self.dependencies = {dts}
        if dts.dependents:
            dts.dependents.add(self)
        else:
            dts.dependents = {self}

    def avoid_worker(self, worker: str) -> None:
        avoid = self.avoid
        if avoid is EMPTY:
            self.avoid = {worker}
        else:
            avoid.add(worker)


class WorkerState:
    """A worker as the client sees it: its cores, resources and what it was given."""

    __slots__ = (
        "address",
        "ncores",
        "processing",
        "queue",
        "urgent",
        "blocked",
        "has",
        "max_in_flight",
        "ahead",
        "ahead_queue",
        "resources",
        "used",
    )

    def __init__(self, address: str, ncores: int, max_in_flight: int):
        self.address = address
        self.ncores = ncores
        self.max_in_flight = max_in_flight
        #: tasks sent to the worker and not yet answered
        self.processing: set[TaskState] = set()
        #: tasks placed on this worker but not yet sent (stale entries skipped)
        self.queue: deque[TaskState] = deque()
        #: the same for tasks with a ``priority`` option: a heap of
        #: ``(-priority, submission order, task)``
        self.urgent: list = []
        #: placed tasks waiting for their resources to be free here
        self.blocked: deque[TaskState] = deque()
        #: keys the client believes this worker holds
        self.has: set[TaskState] = set()
        #: it understands ``pending`` (tasks may be sent ahead of their inputs)
        self.ahead = False
        #: waiting tasks whose unfinished inputs all run here (stale entries skipped)
        self.ahead_queue: deque[TaskState] = deque()
        #: what it declared (its ``identity`` reply's ``resources``), and what
        #: its processing tasks use of it
        self.resources: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def __repr__(self) -> str:
        return (
            f"<WorkerState {self.address} ncores={self.ncores} "
            f"processing={len(self.processing)} queued={len(self.queue)}>"
        )

    @property
    def load(self) -> float:
        n = len(self.processing) + len(self.queue) + len(self.urgent) + len(self.blocked)
        return n / self.ncores

    @property
    def free_slots(self) -> int:
        return self.max_in_flight - len(self.processing)

    def declares(self, needed) -> bool:
        """Whether it declared at least `needed` (``{name: amount}``) of each resource."""
        have = self.resources
        return all(have.get(name, 0.0) >= amount for name, amount in needed.items())

    def fits(self, needed) -> bool:
        """Whether `needed` is free now (declared minus what its running tasks use)."""
        have, used = self.resources, self.used
        return all(
            have.get(name, 0.0) - used.get(name, 0.0) >= amount for name, amount in needed.items()
        )


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
