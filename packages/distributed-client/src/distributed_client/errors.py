"""Exceptions raised by the clients."""

from __future__ import annotations

__all__ = [
    "CancelledError",
    "CenterTimeoutError",
    "KilledEveryWorker",
    "KilledWorker",
    "LostDataError",
    "GraphError",
    "NoWorkersError",
    "NotACenterError",
]


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


class CancelledError(Exception):
    """The task was cancelled (``Future.cancel()``), or an input of it was.

    A plain ``Exception``, unlike ``asyncio.CancelledError``, so that it can
    travel through the event loop like any task error.
    """


class KilledWorker(RuntimeError):
    """A task was running on a worker that died, `attempts` times.

    Raised instead of trying forever when the task itself probably kills its
    worker (segfault, ``os._exit``, running out of memory): after
    ``allowed_failures`` deaths, or earlier when it has killed every worker
    and none came back within ``no_workers_timeout`` (then the error is also
    a :class:`NoWorkersError`).

    Attributes: ``key``, ``workers`` (the workers that died running it, in
    order), ``last_worker``, ``attempts``.

    .. versionchanged:: 0.1.1
       Names every worker the task killed (``workers``); raised after
       ``no_workers_timeout`` when no worker is left, instead of waiting forever.
    """

    def __init__(self, key, workers, attempts: int):
        if isinstance(workers, str):
            workers = [workers]
        workers = list(workers)
        super().__init__(key, workers, attempts)
        self.key = key
        self.workers = workers
        self.last_worker = workers[-1] if workers else None
        self.attempts = attempts

    def __str__(self) -> str:
        where = ", ".join(self.workers) if self.workers else "unknown workers"
        return (
            f"task {self.key!r} was running on a worker that died {_times(self.attempts)} "
            f"(on {where}); it probably kills its worker "
            f"(crash, os._exit, out of memory), so it is not tried again"
        )


class NoWorkersError(TimeoutError):
    """No live worker was available for a task within ``no_workers_timeout`` seconds.

    Every worker died or vanished (or none ever joined), and none came back
    in time. Start workers (``python -m distributed_worker CENTER``) and
    submit again, or pass a larger ``no_workers_timeout``.

    Also raised for a task restricted to workers (``workers=[...]``) none of
    which was alive for ``no_workers_timeout`` seconds; ``allowed`` then names
    them.

    Also raised for a task with ``resources={...}`` that no live worker
    declared (``dworker --resources``) for that long; ``resources`` names them.

    Attributes: ``center``, ``waited`` (seconds), ``keys`` (some of the
    tasks that gave up), ``allowed`` (the workers a restricted task may use),
    ``resources`` (what such a task needs, ``{}`` otherwise).

    .. versionadded:: 0.1.1
    """

    def __init__(self, center, waited: float, keys=(), allowed=(), resources=None):
        keys = list(keys)
        allowed = list(allowed)
        resources = dict(resources or {})
        super().__init__(center, waited, keys, allowed, resources)
        self.center = center
        self.waited = waited
        self.keys = keys
        self.allowed = allowed
        self.resources = resources

    def __str__(self) -> str:
        if self.resources:
            need = ",".join(f"{k}={v:g}" for k, v in sorted(self.resources.items()))
            where = f" on {', '.join(self.allowed)}" if self.allowed else ""
            return (
                f"no worker is available for task {self.keys[0] if self.keys else '?'!r}: "
                f"it needs resources {need}{where}, and no live worker of the center at "
                f"{self.center} declared that much for {self.waited:.3g}s "
                f'(no_workers_timeout); start a worker with --resources "{need}", '
                f"or submit without resources="
            )
        if self.allowed:
            return (
                f"no worker is available for task {self.keys[0] if self.keys else '?'!r}: "
                f"it may only run on {', '.join(self.allowed)}, and none of them was "
                f"alive at the center {self.center} for {self.waited:.3g}s "
                f"(no_workers_timeout); restart one of them, or submit without workers=[...]"
            )
        return (
            f"no worker is available: no live worker of the center at {self.center} "
            f"for {self.waited:.3g}s (no_workers_timeout); every worker died or vanished, "
            f"or none was started. Start workers for this center, or raise no_workers_timeout"
        )


class CenterTimeoutError(TimeoutError):
    """The center did not answer a call within ``center_timeout`` seconds.

    The center process is down, stopped, or its host is unreachable. The
    client stays usable: calls succeed again once the center is back, and
    calls that do not need the center (gathering results whose holders are
    known) keep working meanwhile.

    Attributes: ``center``, ``waited`` (seconds), ``op`` (the call).

    .. versionadded:: 0.1.1
    """

    def __init__(self, center, waited: float, op: str = "", cause: BaseException | None = None):
        super().__init__(center, waited, op)
        self.center = center
        self.waited = waited
        self.op = op
        self.cause = cause

    def __str__(self) -> str:
        what = f" to {self.op!r}" if self.op else ""
        why = f" (last error: {self.cause})" if self.cause is not None and str(self.cause) else ""
        return (
            f"the center at {self.center} did not answer{what} within {self.waited:.3g}s "
            f"(center_timeout){why}; is it running and reachable? The client works again "
            f"once it is back"
        )


class NotACenterError(ValueError):
    """The address given as a center belongs to something else (e.g. a worker).

    .. versionadded:: 0.1.1
    """


class LostDataError(KeyError):
    """Data that only existed on the cluster (it was scattered) is gone with its workers.

    Unlike computed results, scattered data cannot be recomputed. Scatter with
    ``replicas=2`` (or more) to survive the loss of a worker.
    """

    def __init__(self, keys, reason: str | None = None):
        keys = list(keys)
        super().__init__(keys)
        self.keys = keys
        #: why, when it is not the loss of scattered data (e.g. no worker
        #: could fetch the keys from their holders, issue 8)
        self.reason = reason

    def __str__(self) -> str:
        if self.reason:
            return f"data for keys {self.keys!r} could not be used: {self.reason}"
        return (
            f"data for keys {self.keys!r} is no longer on the cluster: every worker "
            f"holding it died, or it was deleted; it was scattered rather than computed, "
            f"so it cannot be recomputed (scatter with replicas=2 to survive a worker's death)"
        )


class GraphError(ValueError):
    """A task graph is malformed (a cycle, a missing dependency, unknown output keys)."""


class KilledEveryWorker(KilledWorker, NoWorkersError):
    """A task's workers died while running it, and no worker was left to retry it.

    Both a :class:`KilledWorker` and a :class:`NoWorkersError`: the task was
    running on every worker that died (``workers``), and none came back within
    ``no_workers_timeout``. Either the task kills its workers, or their hosts
    vanished.

    .. versionadded:: 0.1.1
    """

    def __init__(self, key, workers, attempts: int, center=None, waited: float = 0.0):
        KilledWorker.__init__(self, key, workers, attempts)
        self.args = (key, self.workers, attempts, center, waited)
        self.center = center
        self.waited = waited
        self.keys = [key]

    def __str__(self) -> str:
        where = ", ".join(self.workers) if self.workers else "unknown workers"
        return (
            f"no worker is available for task {self.key!r}: the workers that were running "
            f"it died or vanished ({_times(self.attempts)}, on {where}) and no live worker "
            f"of the center at {self.center} was left for {self.waited:.3g}s "
            f"(no_workers_timeout); if the task kills its workers (crash, os._exit, out of "
            f"memory) it will do so again"
        )
