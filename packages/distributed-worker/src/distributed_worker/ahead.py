"""Computes sent ahead of their inputs: wait for inputs computed on this worker.

A client may send a compute before its inputs exist when those inputs are
being computed on this same worker (``compute(..., pending=[keys])``,
issue 8: a dependency edge then costs no client round trip). The compute
waits for each pending input to be stored here instead of fetching it from
a peer. Requests travel on several connections, so the dependent's compute
may even arrive before its input's: the wait does not need the input's
compute to have started.

Bound: a pending input that is not stored within ``timeout`` seconds (the
worker's ``fetch_timeout``) is reported missing, so the compute replies
``missing-data`` and the client re-places it. An input whose compute raised
is stored as its `Failure`, so the dependent fails with it.

>>> import asyncio
>>> async def demo():
...     arrivals, store = LocalArrivals(), {}
...     waiting = asyncio.ensure_future(arrivals.wait(["x"], store.__contains__, 1.0))
...     await asyncio.sleep(0)
...     store["x"] = 1
...     arrivals.stored("x")
...     return await waiting
>>> asyncio.run(demo())
[]
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Iterable

__all__ = ["LocalArrivals"]


class LocalArrivals:
    """Wake-ups for keys computed on this worker: ``key -> future``.

    `stored` is called whenever a compute has stored its result (or the
    result's `Failure`) and after a compute gave up on a key; `wait` blocks
    until every key is held or its bound passes. The store decides: a key is
    missing if it is not held at the end, whatever woke the waiter.
    """

    def __init__(self) -> None:
        self._futures: dict[Hashable, asyncio.Future] = {}

    def __len__(self) -> int:
        return len(self._futures)

    def stored(self, key: Hashable, ok: bool = True) -> None:
        """The compute of `key` ended here: wake its waiters.

        ``ok=False``: it ended without storing the key (its own inputs were
        missing); waiters then give up on it at once instead of at their bound.
        """
        fut = self._futures.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_result(ok)

    async def wait(
        self, keys: Iterable[Hashable], held: Callable[[Hashable], bool], timeout: float
    ) -> list:
        """Wait until each of `keys` is `held`, at most `timeout` s; return those still missing."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        keys = list(dict.fromkeys(keys))
        given_up: set = set()
        while True:
            waiting = {}
            for k in keys:
                if held(k) or k in given_up:
                    continue
                fut = self._futures.get(k)
                if fut is None or fut.done():
                    fut = self._futures[k] = loop.create_future()
                waiting[k] = fut
            left = deadline - loop.time()
            if not waiting or left <= 0:
                break
            await asyncio.wait(set(waiting.values()), timeout=left, return_when="FIRST_COMPLETED")
            for k, fut in waiting.items():
                if fut.done() and fut.result() is False and not held(k):
                    given_up.add(k)
        missing = [k for k in keys if not held(k)]
        for k in missing:
            fut = self._futures.get(k)
            if fut is not None and not fut.done():
                del self._futures[k]  # nobody announced it: do not keep the entry
                fut.set_result(None)  # wakes any other waiter, which re-checks
        return missing
