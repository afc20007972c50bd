"""distributed-worker: a worker node of the distributed cluster.

A `Worker` holds data in memory, runs functions on it in a pool of threads,
fetches missing inputs directly from the workers that hold them, and reports
what it holds to the Center over one long-lived stream. `DataStore` is its
pure, synchronous data store. `main` is the ``dworker`` command line.
"""

from ._version import __version__
from .cli import main
from .store import DataStore
from .worker import Worker

__all__ = ["DataStore", "Worker", "__version__", "main"]
