"""``Pool``: a ``multiprocessing.Pool`` look-alike whose results stay on the cluster."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable

from ._args import prepickle, replace_remote
from ._client import ClientBase
from ._session import Session
from ._tokenize import funcname
from .remote import RemoteData, gather_keys, scatter_with

__all__ = ["Pool", "AsyncResult"]


class AsyncResult:
    """The result of :meth:`Pool.apply_async`: a RemoteData once the task is done.

    ``get(timeout)`` returns the :class:`RemoteData` (call ``.get()`` on it, or
    ``pool.gather``, for the value) and raises the remote exception if the
    function raised; ``wait(timeout)`` waits; ``ready()`` and
    ``successful()`` as in :mod:`multiprocessing`.
    """

    def __init__(self, pool: Pool, remote: RemoteData):
        self._pool = pool
        self._remote = remote
        self.key = remote.key

    def __repr__(self) -> str:
        return f"<AsyncResult key={self.key!r} ready={self.ready()}>"

    @property
    def _session(self) -> Session:
        return self._remote._session

    async def _get(self):
        await self._session.wait([self.key])
        exc = self._session.error_of(self.key)
        if exc is not None:
            raise exc
        return self._remote

    async def _wait(self):
        await self._session.wait([self.key])

    def get(self, timeout: float | None = None) -> RemoteData:
        """The RemoteData of the result; raises ``TimeoutError`` after `timeout` seconds."""
        return self._pool._sync(self._get, timeout=timeout)

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the task finished (or `timeout` seconds passed)."""
        if self._pool.asynchronous:
            return self._pool._sync(self._wait_quiet, timeout)
        try:
            self._pool._sync(self._wait, timeout=timeout)
        except TimeoutError:
            pass
        return None

    async def _wait_quiet(self, timeout):
        try:
            await asyncio.wait_for(self._wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def ready(self) -> bool:
        return self._session.status_of(self.key)[0] in ("memory", "erred", None)

    def successful(self) -> bool:
        """Whether the task finished without error; ``ValueError`` if not ready yet."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._session.status_of(self.key)[0] == "memory"


class Pool(ClientBase):
    """Run functions on a cluster with the interface of ``multiprocessing.Pool``.

    Results stay on the workers as :class:`RemoteData` until gathered, and
    RemoteData arguments are used where they are (data locality)::

        with Pool("127.0.0.1:8787") as pool:
            A = pool.map(lambda x: x**2, range(10))
            B = pool.map(lambda x: -x, A)
            assert pool.apply(sum, [B]).get() == -285
            assert pool.gather(A) == [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]

    ``map`` and ``apply`` block until the results are computed and raise the
    remote exception (type and traceback) if the function raised.
    ``asynchronous=True`` gives awaitable methods (``async with Pool(...)``).
    Closing the pool deletes the data it computed or scattered.

    No wait is forever: ``center_timeout`` (10 s) bounds every call that
    needs the center (:class:`~distributed_client.CenterTimeoutError`),
    ``no_workers_timeout`` (30 s) how long tasks wait while no worker is
    alive (:class:`~distributed_client.NoWorkersError`), and a task whose
    worker died ``allowed_failures`` (3) times raises
    :class:`~distributed_client.KilledWorker`. `center` may be a
    :class:`~distributed_client.LocalCluster`. Other keyword arguments:
    ``security``, ``asynchronous``, ``timeout`` (to connect), ``name``.

    .. versionchanged:: 0.1.1
       ``center_timeout`` and ``no_workers_timeout``.
    """

    def __init__(self, center, **kwargs):
        super().__init__(center, **kwargs)
        self._accepting = True
        self._outstanding: set = set()
        self._idle: asyncio.Event | None = None

    # ------------------------------------------------------------------ submitting (on the loop)

    async def _submit(self, function, arglists: list, kwargs: dict | None = None) -> list:
        if not self._accepting:
            raise ValueError("Pool not running (it was closed)")
        session = self.session
        session._check_open()
        prefix = f"{funcname(function.function)}-{uuid.uuid4().hex}"
        found: dict = {}
        tasks = {}
        keys = []
        kinds = (RemoteData,)
        for i, args in enumerate(arglists):
            if i and i % 2000 == 0:
                await asyncio.sleep(0)  # let replies in while building a big map
            here: dict = {}
            args = replace_remote(tuple(args), here, kinds)
            kw = replace_remote(kwargs, here, kinds) if kwargs else None
            found.update(here)
            key = f"{prefix}-{i}"
            keys.append(key)
            deps = list(here)
            tasks[key] = ((function, args, kw, deps), deps)
        external = [k for k in found if k not in session.state.tasks]
        if external:
            await session.track_remote_keys(external, found, wants=True)
        try:
            session.update_graph(tasks, wants=keys)
        finally:
            if external:
                session.release(external)
        self._track(keys)
        return [RemoteData._tracked(k, session) for k in keys]

    def _track(self, keys) -> None:
        if self._idle is None:
            self._idle = asyncio.Event()
        self._outstanding.update(keys)
        self._idle.clear()
        for k in keys:
            self.session.watch(k, self._finished)

    def _finished(self, key) -> None:
        self._outstanding.discard(key)
        if not self._outstanding and self._idle is not None:
            self._idle.set()

    async def _map(self, function, iterable):
        function = prepickle(function)
        results = await self._submit(function, [(x,) for x in iterable])
        await self._raise_first_error(results)
        return results

    async def _raise_first_error(self, results: list) -> None:
        session = self.session
        await session.wait([r.key for r in results])
        for r in results:
            exc = session.error_of(r.key)
            if exc is not None:
                raise exc

    async def _apply_async(self, function, args, kwds, callback, error_callback):
        function = prepickle(function)
        [remote] = await self._submit(function, [tuple(args)], dict(kwds) if kwds else None)
        result = AsyncResult(self, remote)
        if callback is not None or error_callback is not None:

            def done(key):
                exc = self.session.error_of(key)
                if exc is None:
                    if callback is not None:
                        callback(remote)
                elif error_callback is not None:
                    error_callback(exc)

            self.session.watch(remote.key, done)
        return result

    async def _apply(self, function, args, kwds):
        result = await self._apply_async(function, args, kwds, None, None)
        return await result._get()

    # ------------------------------------------------------------------ public

    def map(self, func, iterable: Iterable, chunksize=None):
        """Apply `func` to each element; a list of RemoteData once all are computed.

        Elements that are RemoteData are passed as their value, computed on
        the worker that holds them. ``chunksize`` is accepted for
        compatibility and ignored.
        """
        return self._sync(self._map, func, list(iterable))

    def map_async(self, func, iterable: Iterable, chunksize=None):
        """Like :meth:`map` but returns at once: a list of :class:`AsyncResult`."""
        return self._sync(self._map_async, func, list(iterable))

    async def _map_async(self, func, iterable):
        function = prepickle(func)
        results = await self._submit(function, [(x,) for x in iterable])
        return [AsyncResult(self, r) for r in results]

    def apply(self, func, args=(), kwds=None):
        """Run ``func(*args, **kwds)`` on the cluster; its RemoteData once computed."""
        return self._sync(self._apply, func, args, kwds)

    def apply_async(self, func, args=(), kwds=None, callback=None, error_callback=None):
        """Start ``func(*args, **kwds)``; returns an :class:`AsyncResult` at once.

        `callback(remote_data)` or `error_callback(exception)` run (in the
        client's event loop thread) when it finishes.
        """
        return self._sync(self._apply_async, func, args, kwds, callback, error_callback)

    def scatter(self, data, key: str | None = None, replicas: int = 1):
        """Put local data on the workers: a list of RemoteData (or dict for a dict)."""
        return self._sync(self._scatter, data, key, replicas)

    async def _scatter(self, data, key, replicas):
        return await scatter_with(self.session, data, key, replicas)

    def gather(self, remote_data):
        """Values of a list of RemoteData (or keys); a dict gives a dict."""
        return self._sync(self._gather, remote_data)

    async def _gather(self, remote_data):
        if isinstance(remote_data, dict):
            names = list(remote_data)
            values = await self._gather([remote_data[n] for n in names])
            return dict(zip(names, values))
        if isinstance(remote_data, RemoteData):
            return (await self._gather([remote_data]))[0]
        items = list(remote_data)
        keys = [r.key if isinstance(r, RemoteData) else r for r in items]
        refs = {r.key: r for r in items if isinstance(r, RemoteData)}
        data = await gather_keys(self.session, keys, refs)
        return [data[k] for k in keys]

    def close(self):
        """Accept no more work (results already submitted still complete)."""
        self._accepting = False

    def join(self):
        """Wait for everything submitted to finish; call :meth:`close` first."""
        if self._accepting:
            raise ValueError("Pool is still running: call close() before join()")
        return self._sync(self._join)

    async def _join(self):
        if self._outstanding and self._idle is not None:
            await self._idle.wait()

    def terminate(self):
        """Stop outstanding work and disconnect; the pool's data is deleted."""
        self._accepting = False
        if self.session is not None and not self.session.closed:
            keys = list(self._outstanding)
            if keys:
                self._call_in_loop(self.session.cancel, keys)
        return ClientBase.close(self)

    def __exit__(self, *exc):
        self._accepting = False
        try:
            if exc[0] is None and self.session is not None and not self.session.closed:
                self._sync(self._join)
        finally:
            ClientBase.close(self)

    async def __aexit__(self, *exc):
        self._accepting = False
        try:
            if exc[0] is None:
                await self._join()
        finally:
            await self._aclose()
