"""Abstract resources a worker offers, and the tasks holding them (issue 10).

A worker declares ``--resources "GPU=2,MEM=8e9"``. A ``compute`` whose message
carries ``resources={"GPU": 1}`` runs only while that much is free: it waits
(in arrival order) for earlier tasks to give theirs back, holds it while it
runs, and returns it when done. Asking for more than the worker declares at
all is an error at once (it could never run here). Clients send
``resources`` only to workers whose ``identity`` lists the ``resources``
feature, and place tasks where resources are declared, so a queue here is
short; the wait is on this worker's own tasks, never on another process.

:class:`ResourcePool` keeps the accounting synchronous (testable without an
event loop running a worker); :meth:`ResourcePool.acquire` is the one
awaitable.
"""

from __future__ import annotations

import asyncio
from collections import deque

from distributed_core import parse_resources

__all__ = ["ResourcePool"]


class ResourcePool:
    """``total`` resources; tasks take and give back amounts of them."""

    def __init__(self, total: dict[str, float]):
        self.total = dict(total)
        self.free = dict(total)
        self._waiters: deque = deque()  # (need, future), first come first served

    def check(self, resources) -> dict[str, float]:
        """``resources`` parsed; ValueError if it can never be satisfied here."""
        need = parse_resources(resources) or {}
        short = {k: v for k, v in need.items() if v > self.total.get(k, 0.0)}
        if short:
            asked = ", ".join(f"{k}={v:g}" for k, v in short.items())
            have = ", ".join(f"{k}={v:g}" for k, v in self.total.items()) or "none"
            raise ValueError(
                f"task needs resources {asked}, more than this worker declares ({have}); "
                f"send it to a worker started with enough (dworker --resources)"
            )
        return need

    def fits(self, need: dict) -> bool:
        return all(self.free.get(k, 0.0) >= v for k, v in need.items())

    def take(self, need: dict) -> None:
        for k, v in need.items():
            self.free[k] -= v

    def release(self, need: dict) -> None:
        """Give `need` back and start the waiters that now fit, in order."""
        for k, v in need.items():
            self.free[k] = min(self.free[k] + v, self.total[k])
        while self._waiters:
            want, fut = self._waiters[0]
            if fut.done():  # cancelled meanwhile
                self._waiters.popleft()
                continue
            if not self.fits(want):
                break  # first come first served: later ones wait behind it
            self._waiters.popleft()
            self.take(want)
            fut.set_result(None)

    async def acquire(self, need: dict) -> dict:
        """Wait until `need` is free, take it; return it (for :meth:`release`)."""
        if not need:
            return need
        if not self._waiters and self.fits(need):
            self.take(need)
            return need
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((need, fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(need)  # granted just as we were cancelled
            raise
        return need
