"""Exceptions raised by the clients."""

from __future__ import annotations

__all__ = ["CancelledError", "KilledWorker", "LostDataError", "GraphError"]


class CancelledError(Exception):
    """The task was cancelled (``Future.cancel()``), or an input of it was.

    A plain ``Exception``, unlike ``asyncio.CancelledError``, so that it can
    travel through the event loop like any task error.
    """


class KilledWorker(RuntimeError):
    """A task was running on a worker that died, `attempts` times in a row.

    Raised instead of trying forever when the task itself probably kills its
    worker (segfault, ``os._exit``, running out of memory).
    """

    def __init__(self, key, last_worker: str, attempts: int):
        super().__init__(key, last_worker, attempts)
        self.key = key
        self.last_worker = last_worker
        self.attempts = attempts

    def __str__(self) -> str:
        return (
            f"task {self.key!r} was running on a worker that died {self.attempts} times "
            f"(last on {self.last_worker}); it probably kills its worker "
            f"(crash, os._exit, out of memory), so it is not tried again"
        )


class LostDataError(KeyError):
    """Data that only existed on the cluster (it was scattered) is gone with its workers.

    Unlike computed results, scattered data cannot be recomputed. Scatter with
    ``replicas=2`` (or more) to survive the loss of a worker.
    """

    def __init__(self, keys):
        keys = list(keys)
        super().__init__(keys)
        self.keys = keys

    def __str__(self) -> str:
        return (
            f"data for keys {self.keys!r} is no longer on the cluster: every worker "
            f"holding it died, or it was deleted; it was scattered rather than computed, "
            f"so it cannot be recomputed (scatter with replicas=2 to survive a worker's death)"
        )


class GraphError(ValueError):
    """A task graph is malformed (a cycle, a missing dependency, unknown output keys)."""
