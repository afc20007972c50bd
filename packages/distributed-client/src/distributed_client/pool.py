"""``Pool``: ``multiprocessing.Pool`` on a cluster (values back, or RemoteData kept remote)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from ._args import prepickle, replace_remote
from ._client import ClientBase
from ._pool_results import AsyncResult, IMapIterator, PoolTimeoutError
from ._tokenize import funcname
from .remote import RemoteData, gather_keys, scatter_with

__all__ = ["Pool", "AsyncResult", "IMapIterator", "PoolTimeoutError"]

logger = logging.getLogger("distributed_client")


def _make_chunk_runner():
    # Defined in a function so that cloudpickle ships it by value: workers
    # need nothing of this package to run a chunk.
    def run_chunk(func, star, items):
        if star:
            return [func(*args) for args in items]
        return [func(x) for x in items]

    return run_chunk


_run_chunk = _make_chunk_runner()


def _chunksize(chunksize) -> int:
    if chunksize is None:
        return 1
    if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
        raise ValueError(f"chunksize must be a positive int (or None), got {chunksize!r}")
    return chunksize


class Pool(ClientBase):
    """Run functions on a cluster with the interface of ``multiprocessing.Pool``.

    ``map``, ``starmap``, ``apply``, ``imap``, ``imap_unordered`` and the
    ``get()`` of ``map_async``/``starmap_async``/``apply_async`` give
    *values*, as :mod:`multiprocessing` does, and raise the remote exception
    (type and traceback) if the function raised::

        with Pool("127.0.0.1:8787") as pool:
            assert pool.map(abs, [-1, -2]) == [1, 2]
            assert pool.starmap(pow, [(2, 3), (3, 2)]) == [8, 9]

    With ``remote=True`` (``map``, ``starmap``, ``apply`` and their async
    forms) results stay on the workers as :class:`RemoteData` until
    gathered, and RemoteData arguments are used where they are (data
    locality)::

            A = pool.map(lambda x: x**2, range(10), remote=True)
            B = pool.map(lambda x: -x, A, remote=True)
            assert pool.apply(sum, [B]) == -285
            assert pool.gather(A) == [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]

    ``chunksize`` sends that many items per task (one result list per task
    on the worker); None means 1 item per task, which balances best on a
    cluster. Values are gathered once, then the data is released on the
    cluster. ``asynchronous=True`` gives awaitable methods (``async with
    Pool(...)``; ``async for`` over ``await pool.imap(...)``). Closing the
    pool deletes the data it computed or scattered.

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

    .. versionchanged:: 0.2.0
       ``map``/``apply`` return values like ``multiprocessing`` (was:
       RemoteData, now ``remote=True``); ``starmap``, ``imap``,
       ``imap_unordered``, ``starmap_async``; ``chunksize`` is honoured;
       ``map_async`` returns one :class:`AsyncResult`.
    """

    def __init__(self, center: Any = None, **kwargs: Any) -> None:
        super().__init__(center, **kwargs)
        self._accepting = True
        self._outstanding: set = set()
        self._idle: asyncio.Event | None = None

    # ------------------------------------------------------------------ submitting (on the loop)

    async def _submit(self, function, arglists: list, kwargs: dict | None = None, name=None):
        if not self._accepting:
            raise ValueError("Pool not running (it was closed)")
        session = self.session
        session._check_open()
        prefix = f"{name or funcname(function.function)}-{uuid.uuid4().hex}"
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

    def _background(self, coro) -> None:
        """Run `coro` on the loop (result callbacks, imap's gathering); ``join`` waits for it."""
        token = object()
        self._track([])
        self._outstanding.add(token)
        task = asyncio.ensure_future(coro)

        def finished(t):
            if not t.cancelled() and t.exception() is not None:
                logger.error("a Pool result callback failed", exc_info=t.exception())  # user code
            self._finished(token)

        task.add_done_callback(finished)

    async def _submit_items(self, func, arglists, star, chunksize, kwds=None, remote=False):
        """Submit; ``(remotes, chunked)``: one task per item, or per `chunksize` items."""
        size = _chunksize(chunksize)
        if remote and size > 1:
            raise ValueError(
                "remote=True keeps one RemoteData per item, so it needs one task per item: "
                f"leave chunksize at None or 1 (got {chunksize!r})"
            )
        function = prepickle(func)
        if size == 1:
            if star:
                arglists = [tuple(a) for a in arglists]
            else:
                arglists = [(x,) for x in arglists]
            return await self._submit(function, arglists, kwds), False
        chunks = [arglists[i : i + size] for i in range(0, len(arglists), size)]
        if star:
            chunks = [[tuple(a) for a in c] for c in chunks]
        runner = prepickle(_run_chunk)
        name = funcname(func)
        return await self._submit(runner, [(function, star, c) for c in chunks], None, name), True

    async def _map_async(self, func, items, star, chunksize, callback, error_callback, remote):
        remotes, chunked = await self._submit_items(func, items, star, chunksize, remote=remote)
        result = AsyncResult(self, remotes, chunked=chunked, remote=remote)
        result._watch()
        result._on_complete(callback, error_callback)
        return result

    async def _map(self, func, items, star, chunksize, remote):
        result = await self._map_async(func, items, star, chunksize, None, None, remote)
        return await result._get()

    async def _apply_async(self, function, args, kwds, callback, error_callback, remote=False):
        remotes, _ = await self._submit_items(
            function, [tuple(args)], True, None, dict(kwds) if kwds else None
        )
        result = AsyncResult(self, remotes, single=True, remote=remote)
        result._watch()
        result._on_complete(callback, error_callback)
        return result

    async def _apply(self, function, args, kwds, remote):
        result = await self._apply_async(function, args, kwds, None, None, remote)
        return await result._get()

    async def _imap(self, func, items, chunksize, ordered):
        remotes, chunked = await self._submit_items(func, items, False, chunksize)
        it = IMapIterator(self, remotes, chunked=chunked, ordered=ordered)
        it._watch()
        return it

    # ------------------------------------------------------------------ public

    def map(
        self,
        func: Callable,
        iterable: Iterable,
        chunksize: int | None = None,
        *,
        remote: bool = False,
    ) -> list:
        """``[func(x) for x in iterable]``, computed on the cluster.

        Blocks until every result is computed and returns the values; raises
        the first failed task's exception. `chunksize` items go in each task
        (None: 1). Elements that are RemoteData are passed as their value,
        computed on the worker that holds them. ``remote=True`` returns a
        list of :class:`RemoteData` instead (the results stay on the
        workers; one task per item).

        .. versionchanged:: 0.2.0
           Returns values (was: RemoteData, now ``remote=True``);
           ``chunksize`` is honoured.
        """
        return self._sync(self._map, func, list(iterable), False, chunksize, remote)

    def starmap(
        self,
        func: Callable,
        iterable: Iterable,
        chunksize: int | None = None,
        *,
        remote: bool = False,
    ) -> list:
        """``[func(*args) for args in iterable]``; otherwise like :meth:`map`.

        .. versionadded:: 0.2.0
        """
        return self._sync(self._map, func, list(iterable), True, chunksize, remote)

    def map_async(
        self,
        func: Callable,
        iterable: Iterable,
        chunksize: int | None = None,
        callback: Callable | None = None,
        error_callback: Callable | None = None,
        *,
        remote: bool = False,
    ) -> AsyncResult:
        """Like :meth:`map` but returns at once: one :class:`AsyncResult`.

        `callback(list_of_values)` or `error_callback(exception)` run in the
        client's event loop thread when it is done (keep them short).

        .. versionchanged:: 0.2.0
           One AsyncResult for the whole map (was: a list of them);
           callbacks; ``chunksize``.
        """
        return self._sync(
            self._map_async, func, list(iterable), False, chunksize,
            callback, error_callback, remote,
        )  # fmt: skip

    def starmap_async(
        self,
        func: Callable,
        iterable: Iterable,
        chunksize: int | None = None,
        callback: Callable | None = None,
        error_callback: Callable | None = None,
        *,
        remote: bool = False,
    ) -> AsyncResult:
        """Like :meth:`starmap` but returns at once: one :class:`AsyncResult`.

        .. versionadded:: 0.2.0
        """
        return self._sync(
            self._map_async, func, list(iterable), True, chunksize,
            callback, error_callback, remote,
        )  # fmt: skip

    def imap(self, func: Callable, iterable: Iterable, chunksize: int = 1) -> IMapIterator:
        """An iterator of ``func(x)`` in order, each as soon as it and those before it are done.

        Every task is submitted at once; results are gathered in batches of
        those finished and released on the cluster as they are consumed.
        A failed task raises its exception at its place; ``next(timeout)``
        raises ``PoolTimeoutError``. In an asynchronous pool:
        ``async for x in await pool.imap(...)``.

        .. versionadded:: 0.2.0
        """
        return self._sync(self._imap, func, list(iterable), chunksize, True)

    def imap_unordered(
        self, func: Callable, iterable: Iterable, chunksize: int = 1
    ) -> IMapIterator:
        """Like :meth:`imap`, but results come in the order they finish.

        .. versionadded:: 0.2.0
        """
        return self._sync(self._imap, func, list(iterable), chunksize, False)

    def apply(
        self,
        func: Callable,
        args: Iterable = (),
        kwds: dict | None = None,
        *,
        remote: bool = False,
    ) -> Any:
        """``func(*args, **kwds)`` on the cluster: its value (its RemoteData with ``remote=True``).

        .. versionchanged:: 0.2.0
           Returns the value (was: the RemoteData, now ``remote=True``).
        """
        return self._sync(self._apply, func, args, kwds, remote)

    def apply_async(
        self,
        func: Callable,
        args: Iterable = (),
        kwds: dict | None = None,
        callback: Callable | None = None,
        error_callback: Callable | None = None,
        *,
        remote: bool = False,
    ) -> AsyncResult:
        """Start ``func(*args, **kwds)``; returns an :class:`AsyncResult` at once.

        `callback(value)` or `error_callback(exception)` run (in the
        client's event loop thread) when it finishes.

        .. versionchanged:: 0.2.0
           ``get()`` and `callback` get the value (was: the RemoteData, now
           ``remote=True``).
        """
        return self._sync(self._apply_async, func, args, kwds, callback, error_callback, remote)

    def scatter(self, data: Any, key: str | None = None, replicas: int = 1) -> Any:
        """Put local data on the workers: a list of RemoteData (or dict for a dict)."""
        return self._sync(self._scatter, data, key, replicas)

    async def _scatter(self, data, key, replicas):
        return await scatter_with(self.session, data, key, replicas)

    def gather(self, remote_data: Any) -> Any:
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
        try:
            data = await gather_keys(self.session, keys, refs)
        except KeyError as e:
            if refs:
                raise
            raise KeyError(
                f"{e.args[0] if e.args else e} (Pool.map/apply return values since issue 10, "
                "so there is nothing to gather: use their result directly, or pass "
                "remote=True to get RemoteData)"
            ) from None
        return [data[k] for k in keys]

    def close(self) -> Any:
        """Accept no more work (results already submitted still complete)."""
        self._accepting = False

    def join(self) -> Any:
        """Wait for everything submitted to finish, then disconnect and delete
        the pool's data on the cluster (gather results first); call
        :meth:`close` first.

        .. versionchanged:: 0.2.0
           Disconnects and deletes the pool's data (it only waited before).
        """
        if self._accepting:
            raise ValueError("Pool is still running: call close() before join()")
        if self.asynchronous:
            return self._join_and_close()
        if self.session is None or self.session.closed:
            return None
        try:
            self._sync(self._join)
        finally:
            ClientBase.close(self)
        return None

    async def _join_and_close(self):
        try:
            await self._join()
        finally:
            await self._aclose()

    async def _join(self):
        if self._outstanding and self._idle is not None:
            await self._idle.wait()

    def terminate(self) -> Any:
        """Stop outstanding work and disconnect; the pool's data is deleted."""
        self._accepting = False
        if self.session is not None and not self.session.closed:
            keys = list(self._outstanding)
            if keys:
                self._call_in_loop(self.session.cancel, keys)
        return ClientBase.close(self)

    def __exit__(self, *exc: object) -> None:
        self._accepting = False
        try:
            if exc[0] is None and self.session is not None and not self.session.closed:
                self._sync(self._join)
        finally:
            ClientBase.close(self)

    async def __aexit__(self, *exc: object) -> None:
        self._accepting = False
        try:
            if exc[0] is None:
                await self._join()
        finally:
            await self._aclose()
