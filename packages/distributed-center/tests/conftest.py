"""Fixtures: a running Center, a fake worker speaking the report-stream protocol.

Helpers are handed out as fixtures (not imported from a module) so that the
tests work under any pytest import mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from distributed_center import Center
from distributed_core import CommClosedError, connect


@contextlib.asynccontextmanager
async def _running_center(address="tcp://127.0.0.1:0", **kwargs):
    kwargs.setdefault("heartbeat_interval", 0.2)
    kwargs.setdefault("heartbeat_timeout", 1.0)
    center = Center(**kwargs)
    await center.listen(address)
    try:
        yield center
    finally:
        await center.close()


async def _wait_until(predicate, timeout=5.0, interval=0.01):
    """Poll ``predicate`` (sync or async) until it is true; return seconds waited."""
    start = time.monotonic()
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


class FakeClock:
    """A monotonic clock that moves only when told: ``clock.now += 5``."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeWorker:
    """A raw connection speaking the worker side of the report-stream protocol.

    It never listens; ``address`` is just the name it registers under.
    """

    def __init__(self, center_address, address, security=None):
        self.center_address = center_address
        self.address = address
        self.security = security
        self.comm = None
        self.reply = None

    async def register(self, keys=(), ncores=1, name=None, nbytes=None, **extra):
        self.comm = await connect(self.center_address, security=self.security)
        await self.comm.write(
            {
                "op": "register",
                "reply": False,
                "stream": True,
                "address": self.address,
                "keys": keys,
                "ncores": ncores,
                "name": name,
                "nbytes": nbytes,
                **extra,
            }
        )
        self.reply = await asyncio.wait_for(self.comm.read(), 5)
        return self.reply

    async def send(self, msg):
        await self.comm.write(msg)

    async def add_keys(self, keys, nbytes=None):
        await self.send({"op": "add_keys", "keys": list(keys), "nbytes": nbytes})

    async def remove_keys(self, keys):
        await self.send({"op": "remove_keys", "keys": list(keys)})

    async def heartbeat(self, **metrics):
        await self.send({"op": "heartbeat", **metrics})

    async def unregister(self):
        await self.send({"op": "unregister"})

    async def wait_closed(self, timeout=5.0) -> list:
        """Read until the center closes the stream; return what it sent meanwhile.

        Raises ``asyncio.TimeoutError`` if the stream is still open after ``timeout``.
        """
        received = []

        async def drain():
            while True:
                try:
                    received.append(await self.comm.read())
                except CommClosedError:
                    return

        await asyncio.wait_for(drain(), timeout)
        return received

    def close(self):
        if self.comm is not None:
            self.comm.abort()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        self.close()


@pytest.fixture
def running_center():
    """``async with running_center(**kwargs) as center`` (heartbeats 0.2 s / 1 s)."""
    return _running_center


@pytest.fixture
def fake_clock():
    return FakeClock()


@pytest.fixture
def wait_until():
    return _wait_until


@pytest.fixture
def fake_worker():
    """The FakeWorker class: ``fake_worker(center.address, 'tcp://127.0.0.1:1')``."""
    return FakeWorker
