"""What ``Pool``'s asynchronous methods return: ``AsyncResult`` and the ``imap`` iterators.

Both follow :mod:`multiprocessing.pool`: an :class:`AsyncResult` is one
``apply_async`` or one whole ``map_async`` (``get()`` gives the value, or the
list of values), and ``imap``/``imap_unordered`` give iterators with a
``next(timeout)``. Values are gathered once and the data on the cluster is
then released; with ``remote=True`` the results stay on the workers and
:class:`~distributed_client.RemoteData` is returned instead.

Completion is noticed with one watcher per key (``Session.watch``), so the
cost is linear in the number of tasks however they are consumed.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections import deque
from collections.abc import Hashable
from typing import Any

__all__ = ["AsyncResult", "IMapIterator", "PoolTimeoutError"]

#: at most this many results are gathered in one request by the iterators
ITER_BATCH = 1000


class PoolTimeoutError(multiprocessing.TimeoutError, TimeoutError):
    """``get(timeout)``/``next(timeout)`` ran out of time (the work goes on).

    Both ``multiprocessing.TimeoutError`` (as with ``multiprocessing.Pool``)
    and the builtin ``TimeoutError`` catch it.
    """


def _done(session, key: Hashable) -> str | None:
    """``'memory'``, ``'erred'``, or None while `key` is still pending.

    A key the session forgot (released) counts as finished (``'memory'``).
    """
    st = session.status_of(key)[0]  # safe from any thread
    if st is None:
        return "memory"
    return st if st in ("memory", "erred") else None


async def _within(coro, timeout: float | None):
    """Await `coro`; after `timeout` seconds cancel it and raise PoolTimeoutError."""
    if timeout is None:
        return await coro
    task = asyncio.ensure_future(coro)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.cancel()
        raise PoolTimeoutError(f"no result within {timeout} s (the work goes on)")
    return task.result()


def _all_done(session, keys: list) -> asyncio.Future:
    """A task that ends when every key is done, or raises when the session closes.

    ``Session.wait`` is what notices a closing session; waits in this module
    race their own event against this, so none outlives the pool.
    """
    task = asyncio.ensure_future(session.wait(keys))
    task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved
    return task


async def _until(event: asyncio.Event, all_done: asyncio.Future) -> None:
    """Wait for `event`; raise the session's error if it closes first."""
    if event.is_set():
        return
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter, all_done}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if not event.is_set() and all_done.done() and all_done.exception() is not None:
        raise all_done.exception()


def _flatten(chunks: list) -> list:
    return [x for chunk in chunks for x in chunk]


class AsyncResult:
    """The result of ``Pool.apply_async``/``map_async``/``starmap_async``.

    As in :mod:`multiprocessing`: ``get(timeout)`` returns the value (a list
    for the map forms) or raises the remote exception, and raises
    ``PoolTimeoutError`` (a ``multiprocessing.TimeoutError`` and a
    ``TimeoutError``) after `timeout` seconds; ``wait(timeout)`` waits;
    ``ready()``; ``successful()`` (``ValueError`` while not ready). A map
    result is ready, and unsuccessful, as soon as one of its tasks failed.

    Made with ``remote=True``, ``get()`` returns the
    :class:`~distributed_client.RemoteData` (or list of them) instead, and
    the results stay on the workers.

    In an asynchronous pool, ``get`` and ``wait`` return awaitables.

    .. versionchanged:: 0.2.0
       ``get()`` returns values, as ``multiprocessing`` does (was: the
       RemoteData; ``remote=True`` keeps that); ``map_async`` returns one
       AsyncResult for the whole map (was: a list, one per item).
    """

    def __init__(
        self,
        pool: Any,
        remotes: list,
        *,
        single: bool = False,
        chunked: bool = False,
        remote: bool = False,
    ) -> None:
        self._pool = pool
        self._session = pool.session
        self._remotes = remotes
        self._keys = [r.key for r in remotes]
        self._single = single
        self._chunked = chunked
        self._remote = remote
        self._pending = len(remotes)
        self._error: BaseException | None = None
        self._outcome: tuple | None = None  # (True, value) or (False, exception), once gathered
        self._event = asyncio.Event()
        self._callbacks: list = []
        self._all_done: asyncio.Future | None = None

    def _watch(self) -> None:
        """Start noticing completion (on the loop, right after submitting)."""
        if not self._keys:
            self._event.set()
        for k in self._keys:
            self._session.watch(k, self._one_done)
        self._all_done = _all_done(self._session, self._keys)

    def _one_done(self, key) -> None:
        self._pending -= 1
        if self._error is None and self._session.state.state_of(key) == "erred":
            self._error = self._session.error_of(key)
        if (self._pending <= 0 or self._error is not None) and not self._event.is_set():
            self._event.set()
            if self._callbacks:
                self._pool._background(self._run_callbacks())

    def _on_complete(self, callback, error_callback) -> None:
        if callback is None and error_callback is None:
            return
        self._callbacks.append((callback, error_callback))
        if self._event.is_set():
            self._pool._background(self._run_callbacks())

    async def _run_callbacks(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        try:
            value, exc = await self._get(), None
        except Exception as e:
            value, exc = None, e
        for callback, error_callback in callbacks:
            fn, arg = (callback, value) if exc is None else (error_callback, exc)
            if fn is not None:
                fn(arg)  # errors are logged by the pool's background runner

    def __repr__(self) -> str:
        n = "1 task" if self._single else f"{len(self._keys)} tasks"
        return f"<AsyncResult {n} ready={self.ready()}>"

    @property
    def remote_data(self) -> Any:
        """The :class:`~distributed_client.RemoteData` (a list for map) at once,
        without waiting: pass it on to more work. Only with ``remote=True``."""
        if not self._remote:
            raise ValueError("remote_data is kept only for results made with remote=True")
        return self._remotes[0] if self._single else list(self._remotes)

    # ------------------------------------------------------------------ on the loop

    async def _get(self):
        if self._outcome is None:
            await _until(self._event, self._all_done)
            if self._outcome is None:
                self._outcome = await self._collect()
        ok, value = self._outcome
        if not ok:
            raise value
        return value

    async def _collect(self) -> tuple:
        if self._error is not None:
            return False, self._error
        for k in self._keys:  # e.g. lost and recomputed meanwhile, or erred
            exc = self._session.error_of(k)
            if exc is not None:
                return False, exc
        if self._remote:
            value = self._remotes[0] if self._single else list(self._remotes)
            return True, value
        try:
            data = await self._session.gather(self._keys)
        except Exception as e:
            return False, e
        values = [data[k] for k in self._keys]
        self._remotes = []  # the values are here now: release the data on the cluster
        if self._single:
            return True, values[0]
        return True, _flatten(values) if self._chunked else values

    # ------------------------------------------------------------------ public

    def get(self, timeout: float | None = None) -> Any:
        """The value (a list for map), or raise the remote exception.

        Raises ``PoolTimeoutError`` if it is not ready within `timeout`
        seconds.
        """
        return self._pool._sync(self._get_within, timeout)

    async def _get_within(self, timeout):
        return await _within(self._get(), timeout)

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the result is ready, or at most `timeout` seconds."""
        return self._pool._sync(self._wait, timeout)

    async def _wait(self, timeout) -> None:
        try:
            await _within(_until(self._event, self._all_done), timeout)
        except PoolTimeoutError:
            pass

    def ready(self) -> bool:
        """Whether the work finished (or one of its tasks failed)."""
        if self._outcome is not None or self._event.is_set():
            return True
        states = [_done(self._session, k) for k in self._keys]
        return "erred" in states or None not in states

    def successful(self) -> bool:
        """Whether it finished without error; ``ValueError`` if not ready yet."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        if self._outcome is not None:
            return self._outcome[0]
        if self._error is not None:
            return False
        return all(_done(self._session, k) == "memory" for k in self._keys)


class IMapIterator:
    """The iterator of ``Pool.imap`` (in order) and ``imap_unordered`` (as finished).

    ``next(timeout)`` as in :mod:`multiprocessing` (``PoolTimeoutError``
    after `timeout` seconds); a failed task raises its exception at its place
    and the iteration can go on after it. As in :mod:`multiprocessing`,
    results are brought here as soon as they are computed, whether consumed
    yet or not: in batches of what has finished (at most ``ITER_BATCH``
    tasks), after which their data on the cluster is released. In an
    asynchronous pool use ``async for``.
    """

    def __init__(self, pool, remotes: list, *, chunked: bool, ordered: bool):
        self._pool = pool
        self._session = pool.session
        self._remotes = {r.key: r for r in remotes}
        self._order = deque(r.key for r in remotes) if ordered else None
        self._left = len(remotes)  # tasks not yet consumed
        self._chunked = chunked
        self._finished: deque = deque()  # keys finished, not yet gathered
        self._event = asyncio.Event()  # something finished
        self._results: dict = {}  # key -> (ok, [values] or exception), in arrival order
        self._arrived = asyncio.Event()  # something was gathered
        self._buffer: deque = deque()  # (ok, value) ready for next()
        self._all_done: asyncio.Future | None = None

    def _watch(self) -> None:
        for k in list(self._remotes):
            self._session.watch(k, self._one_done)
        self._all_done = _all_done(self._session, list(self._remotes))
        if self._remotes:
            self._pool._background(self._pump())

    def _one_done(self, key) -> None:
        self._finished.append(key)
        self._event.set()

    async def _pump(self) -> None:
        """Gather finished results as they come (on the loop, in the background)."""
        try:
            while self._remotes:
                while not self._finished:
                    self._event.clear()
                    await _until(self._event, self._all_done)
                await self._gather_finished()
                self._arrived.set()
        except BaseException as e:  # e.g. the pool went away: every result left is that error
            for k in list(self._remotes):
                self._results[k] = (False, e)
            self._remotes.clear()
            if not isinstance(e, Exception):
                raise
        finally:
            self._arrived.set()

    async def _gather_finished(self) -> None:
        session = self._session
        batch = [self._finished.popleft() for _ in range(min(len(self._finished), ITER_BATCH))]
        good = [k for k in batch if session.error_of(k) is None]
        data = await session.gather(good, errors="return") if good else {}
        for k in batch:
            exc = session.error_of(k)
            if exc is not None or k not in data:
                self._results[k] = (False, exc or KeyError(f"result {k!r} was lost"))
            else:
                self._results[k] = (True, data[k] if self._chunked else [data[k]])
            self._remotes.pop(k, None)  # releases the data on the cluster

    def __iter__(self):
        return self

    def __next__(self):
        return self.next()

    def next(self, timeout: float | None = None):
        """The next result; ``PoolTimeoutError`` if none within `timeout` seconds."""
        if self._pool.asynchronous:
            raise TypeError("an asynchronous pool's imap is used with `async for`")
        if not self._buffer and not self._left:
            raise StopIteration
        return self._pool._sync(self._next, timeout)

    def __aiter__(self):
        return self

    async def __anext__(self):
        if not self._buffer and not self._left:
            raise StopAsyncIteration
        return await self._next(None)

    async def _next(self, timeout):
        if not self._buffer:
            await _within(self._take(), timeout)
        ok, value = self._buffer.popleft()
        if not ok:
            raise value
        return value

    async def _take(self) -> None:
        """Move the next result (in order, or the first to arrive) to the buffer.

        Cancellation-safe: nothing changes until the result is there.
        """
        while True:
            if self._order is not None:
                key = self._order[0]
                if key in self._results:
                    self._order.popleft()
                    break
            elif self._results:
                key = next(iter(self._results))
                break
            self._arrived.clear()
            await self._arrived.wait()
        ok, values = self._results.pop(key)
        self._left -= 1
        if ok:
            self._buffer.extend((True, v) for v in values)
        else:
            self._buffer.append((False, values))
