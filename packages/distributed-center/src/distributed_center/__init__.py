"""distributed-center: the metadata Center of the distributed cluster.

The Center knows which worker holds which key (``who_has``/``has_what``), how
many cores each worker has, and which workers are alive. It never holds or
unpickles user data; workers hold the data and fetch it from each other.

>>> from distributed_center import Center
>>> center = Center(heartbeat_timeout=5)          # doctest: +SKIP
>>> await center.listen("tcp://0.0.0.0:8787")     # doctest: +SKIP

Run one from the shell with ``dcenter`` (or ``python -m distributed_center``).
"""

from ._version import __version__
from .center import DEFAULT_PORT, Center
from .cli import main
from .leases import Leases
from .state import CenterState, WorkerInfo

__all__ = [
    "DEFAULT_PORT",
    "Center",
    "CenterState",
    "Leases",
    "WorkerInfo",
    "__version__",
    "main",
]
