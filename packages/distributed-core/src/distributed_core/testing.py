"""Helpers for tests of this and other packages: ports, servers, leak checks.

>>> from distributed_core.testing import gen_test, serve
>>> @gen_test()
... async def test_ping():
...     async with serve({}) as server, rpc(server.address) as r:
...         assert await r.ping() == "pong"
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import threading
import time

from .server import Server

__all__ = ["check_leaks", "free_port", "gen_test", "open_fds", "serve"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (for subprocesses that need a fixed one)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def serve(handlers: dict, address: str = "tcp://127.0.0.1:0", **kwargs):
    """``async with serve(handlers) as server``: a listening Server, closed after."""
    server = Server(handlers, **kwargs)
    await server.listen(address)
    try:
        yield server
    finally:
        await server.close()


def open_fds() -> set[int]:
    """This process's open file descriptors (Linux; empty elsewhere)."""
    try:
        listed = {int(fd) for fd in os.listdir("/proc/self/fd")}
    except OSError:  # pragma: no cover
        return set()
    # the listing includes the directory fd listdir itself used (closed by now);
    # left in, it hides a leak that reuses its number and shows up as a bogus one
    fds = set()
    for fd in listed:
        try:
            os.fstat(fd)
        except OSError:
            continue
        fds.add(fd)
    return fds


def _threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.is_alive()}


@contextlib.contextmanager
def check_leaks(threads: bool = True, fds: bool = True, grace: float = 2.0):
    """Fail if the block leaves threads or file descriptors behind.

    Resources are given ``grace`` seconds to go away (closing is often
    asynchronous) before the check fails, naming what leaked.
    """
    before_threads = _threads()
    before_fds = open_fds()
    yield
    deadline = time.monotonic() + grace
    while True:
        new_threads = {t for t in _threads() - before_threads if t.is_alive()}
        new_fds = open_fds() - before_fds
        # an fd that is reused by another object isn't a leak we can see; count only
        leaked = (threads and new_threads) or (fds and len(new_fds) > 0)
        if not leaked:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    problems = []
    if threads and new_threads:
        problems.append("threads: " + ", ".join(sorted(t.name for t in new_threads)))
    if fds and new_fds:
        detail = []
        for fd in sorted(new_fds):
            try:
                detail.append(f"{fd}->{os.readlink(f'/proc/self/fd/{fd}')}")
            except OSError:
                detail.append(str(fd))
        problems.append("file descriptors: " + ", ".join(detail))
    raise AssertionError("leaked " + "; ".join(problems))


def gen_test(timeout: float = 30, check: bool = True):
    """Decorator: run an ``async def`` test in a fresh event loop.

    The test fails if it runs longer than ``timeout`` seconds, or (with
    ``check``) if it leaves asyncio tasks, threads or sockets behind.
    """

    def decorator(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            async def main():
                await asyncio.wait_for(fn(*args, **kwargs), timeout)
                await asyncio.sleep(0)
                if check:
                    pending = [
                        t
                        for t in asyncio.all_tasks()
                        if t is not asyncio.current_task() and not t.done()
                    ]
                    if pending:
                        for t in pending:
                            t.cancel()
                        raise AssertionError(f"test left {len(pending)} tasks running: {pending}")

            if check:
                with check_leaks():
                    asyncio.run(main())
            else:
                asyncio.run(main())

        return wrapper

    return decorator
