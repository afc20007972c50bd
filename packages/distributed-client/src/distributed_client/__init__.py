"""distributed-client: drive a distributed cluster from Python.

* :func:`scatter`, :func:`gather`, :func:`delete`, :func:`clear` and
  :class:`RemoteData` -- put data on the cluster and bring it back.
* :class:`Pool` -- ``multiprocessing.Pool`` on a cluster: values, or RemoteData (``remote=True``).
* :func:`get` -- run a dask graph (``dask.compute(x, scheduler=...)``).
* :class:`Executor` -- ``concurrent.futures``-style futures
  (:func:`wait`, :func:`as_completed`, :func:`fire_and_forget`).
* :class:`LocalCluster` -- a Center and Workers as local processes.
* :class:`SSHCluster` -- a Center and Workers started over SSH
  (``distributed-client[ssh]``; also ``dcluster ssh HOST...``).
* Errors: :class:`KilledWorker`, :class:`LostDataError`,
  :class:`NoWorkersError`, :class:`KilledEveryWorker`,
  :class:`CenterTimeoutError`, :class:`NotACenterError`,
  :class:`CancelledError`, :class:`GraphError`.
"""

from ._version import __version__
from .errors import (
    CancelledError,
    CenterTimeoutError,
    GraphError,
    KilledEveryWorker,
    KilledWorker,
    LostDataError,
    NotACenterError,
    NoWorkersError,
)
from .executor import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    Executor,
    Future,
    as_completed,
    fire_and_forget,
    wait,
)
from .graph import get
from .local import LocalCluster
from .pool import AsyncResult, Pool
from .progress import progress
from .remote import RemoteData, clear, delete, gather, scatter
from .ssh import SSHCluster, SSHClusterError

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "Executor",
    "Future",
    "as_completed",
    "fire_and_forget",
    "get",
    "progress",
    "wait",
    "AsyncResult",
    "CancelledError",
    "CenterTimeoutError",
    "GraphError",
    "KilledEveryWorker",
    "KilledWorker",
    "LocalCluster",
    "LostDataError",
    "NoWorkersError",
    "NotACenterError",
    "Pool",
    "RemoteData",
    "SSHCluster",
    "SSHClusterError",
    "__version__",
    "clear",
    "delete",
    "gather",
    "scatter",
]
