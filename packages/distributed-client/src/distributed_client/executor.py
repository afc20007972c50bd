"""``Executor``: ``concurrent.futures``-style futures on the cluster."""

from __future__ import annotations

import concurrent.futures
import os
import threading
import uuid
from collections.abc import Callable, Generator, Hashable, Iterable, Iterator, Mapping
from typing import Any

from . import _dask
from ._args import by_value_modules, prepickle, replace_remote
from ._cfutures import FutureProtocol, new_condition
from ._client import ClientBase
from ._html import executor_html, future_html
from ._options import worker_list
from ._retry import retry_keys
from ._submit import batches, check_map_keywords, map_key_names, options_and_restrictions
from ._tokenize import funcname, tokenize
from ._waiting import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, as_completed, wait
from .errors import CancelledError, LostDataError
from .remote import RemoteData

__all__ = [
    "Executor",
    "Future",
    "as_completed",
    "fire_and_forget",
    "wait",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "ALL_COMPLETED",
]


class Future(FutureProtocol, concurrent.futures.Future[Any]):
    """A remote computation (or scattered data) named by ``key``.

    ``result(timeout)`` brings the value here (or raises the remote
    exception, with the remote traceback as its cause); ``exception()``,
    ``done()``, ``cancel()``, ``cancelled()``, ``add_done_callback(fn)`` as in
    :mod:`concurrent.futures`; ``status`` is ``'pending'``, ``'finished'``,
    ``'error'``, ``'cancelled'`` or ``'lost'``. Passing a Future to
    ``submit`` uses its data on the cluster. The data is deleted when the last
    Future for a key is garbage collected. With an asynchronous Executor,
    ``await future`` (or ``await future.result()``) gives the value.

    A :class:`concurrent.futures.Future` (``isinstance`` holds, and type
    checkers see one): :func:`concurrent.futures.wait`,
    :func:`concurrent.futures.as_completed` and :func:`asyncio.wrap_future`
    accept it; the value stays on the cluster until ``result()``. Its
    ``set_result``/``set_exception``/``set_running_or_notify_cancel`` are
    for executors' internals and are not supported.
    ``running()`` says whether a worker is running it, ``retry()`` runs an
    erred task again.

    .. versionchanged:: 0.2.0
       ``running()``, ``retry()``; usable with ``concurrent.futures.wait``
       and ``as_completed``; ``cancel()`` also cancels queued dependents.
    """

    __slots__ = (
        "key",
        "executor",
        "_released",
        "_cf_state",
        "_cf_waiters",
        "_cf_exc",
        "_cf_epoch",
    )  # concurrent.futures.Future gives __weakref__ (and a __dict__ never filled)

    def __init__(self, key: Hashable, executor: Executor) -> None:
        # the caller already counted one reference to `key` for this Future
        self.key = key
        self.executor = executor
        self._released = False
        self._cf_state: str | None = None  # see _cfutures: set once hooked
        self._cf_waiters: list | None = None
        self._cf_exc: BaseException | None = None
        self._cf_epoch = 0

    def __repr__(self) -> str:
        return f"<Future key={self.key!r} status={self.status}>"

    def __dask_tokenize__(self) -> tuple[str, Hashable]:
        return ("distributed_client.Future", self.key)

    def __reduce__(self):
        raise TypeError(
            "a Future cannot be pickled; pass it directly as an argument of submit/map "
            "(it is replaced by its data on the worker), or send future.result()"
        )

    def __del__(self):
        if not self._released:
            self._released = True
            try:
                s = self.executor.session
                if s is not None:
                    s.release_threadsafe([self.key])
            except Exception:  # interpreter exit
                pass

    @property
    def _session(self):
        return self.executor.session

    @property
    def status(self) -> str:
        s = self._session
        if s is None:
            return "pending"
        st, exc = s.status_of(self.key)
        if st == "memory":
            return "finished"
        if st == "erred":
            if isinstance(exc, CancelledError):
                return "cancelled"
            if isinstance(exc, LostDataError):
                return "lost"
            return "error"
        if st is None and s.closed:
            return "lost"
        return "pending"  # (None: the submission has not reached the loop yet)

    def done(self) -> bool:
        """True when finished, failed or cancelled."""
        if self._cf_final():
            return True
        return self.status != "pending"

    def cancelled(self) -> bool:
        """True when cancelled (by ``cancel()``, or an input of it was)."""
        if self._cf_final():
            return self._cf_state == "CANCELLED_AND_NOTIFIED"
        return self.status == "cancelled"

    def running(self) -> bool:
        """True while a worker runs the task (sent to it, not finished yet)."""
        s = self._session
        if s is None or s.closed:
            return False
        key = self.key
        return self.executor._call_in_loop(lambda: s.state.state_of(key) == "processing")

    def retry(self) -> Any:
        """Run the task again if it erred (its erred inputs too); else nothing.

        An awaitable with an asynchronous Executor.
        """
        return self.executor.retry([self])

    def _repr_html_(self) -> str:
        return future_html(self)

    async def _result(self):
        s = self._session
        await s.wait([self.key])
        exc = s.error_of(self.key)
        if exc is not None:
            raise exc
        return (await s.gather([self.key]))[self.key]

    async def _exception(self):
        s = self._session
        await s.wait([self.key])
        return s.error_of(self.key)

    def result(self, timeout: float | None = None) -> Any:
        """The value; raises the remote exception, or TimeoutError after `timeout` s."""
        return self.executor._sync(self._result, timeout=timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The exception the task raised, or None (waits until done)."""
        if self._cf_final() and not self.executor.asynchronous:
            return self._cf_exc  # known here (concurrent.futures.wait calls this)
        return self.executor._sync(self._exception, timeout=timeout)

    def __await__(self) -> Generator[Any, None, Any]:
        return self._result().__await__()

    def cancel(self) -> bool:
        """Stop the computation; ``result()`` then raises CancelledError."""
        if self.done():
            return self.cancelled()
        self.executor._call_in_loop(self._session.cancel, [self.key])
        return True

    def add_done_callback(self, fn: Callable[[Future], Any]) -> None:
        """Call ``fn(future)`` when done (in a helper thread for blocking executors)."""
        executor = self.executor

        def callback(key):
            executor._run_callback(fn, self)

        s = self._session
        s.call_soon(s.watch, self.key, callback)


class Executor(ClientBase):
    """Submit functions to the cluster and get :class:`Future` objects back.

    >>> with Executor("127.0.0.1:8787") as e:  # doctest: +SKIP
    ...     x = e.submit(inc, 1)
    ...     y = e.submit(add, x, 10)     # x's data stays on the cluster
    ...     y.result()
    12

    ``pure=True`` (the default) names a task by its function and arguments,
    so submitting the same call twice computes it once. ``workers=[...]``
    restricts where a task may run. ``asynchronous=True`` gives an executor
    for use inside an event loop (``async with Executor(..., asynchronous=True)``).
    Shutting down deletes the data of this executor's futures.

    No wait is forever: ``center_timeout`` (10 s) bounds every call that
    needs the center (:class:`~distributed_client.CenterTimeoutError`),
    ``no_workers_timeout`` (30 s) how long tasks wait while no worker is
    alive (:class:`~distributed_client.NoWorkersError`), and a task whose
    worker died ``allowed_failures`` (3) times raises
    :class:`~distributed_client.KilledWorker`. `center` may be a
    :class:`~distributed_client.LocalCluster` or
    :class:`~distributed_client.SSHCluster`, or left out: then the
    configured ``client.address`` (``DISTRIBUTED_CLIENT__ADDRESS``), else a
    LocalCluster of the executor's own (``executor.cluster``), closed with
    it. Other keyword arguments: ``security``, ``asynchronous``,
    ``timeout`` (to connect), ``name``.

    ``set_as_default=True`` (the default; blocking executors only) makes the
    executor dask's default scheduler until it closes, as dask.distributed's
    ``Client`` does: ``x.compute()`` and ``x.persist()`` then run on the
    cluster. ``persist``, ``compute`` and ``get`` run dask collections and
    graphs; ``dask.compute(x, scheduler=executor)`` works too.

    .. versionchanged:: 0.1.1
       ``center_timeout`` and ``no_workers_timeout``.

    .. versionchanged:: 0.2.0
       ``set_as_default``, ``persist``, ``compute(sync=True)``, per-task options
       of ``get``/``compute``/``persist``; `center` is optional; ``cancel``,
       ``retry``, ``who_has``, ``has_what``, ``ncores``; the scheduling
       keywords of ``submit``/``map``.
    """

    def __init__(self, center: Any = None, *, set_as_default: bool = True, **kwargs: Any) -> None:
        # before connecting: a failed start still has what close() and __del__ use
        self._callback_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._callback_lock = threading.Lock()
        self._cf_condition = new_condition()  # shared by this executor's futures
        self._cf_epoch = 0  # bumped by retry(): futures hooked before re-read their state
        super().__init__(center, **kwargs)
        if set_as_default and not self.asynchronous:
            _dask.set_default(self)  # dask's default scheduler until closed

    def close(self) -> Any:
        """Close the connection (see ClientBase.close); no longer dask's default scheduler."""
        _dask.unset_default(self)
        return super().close()

    # ------------------------------------------------------------------ submitting

    def _prepare(self, function, args, kwargs, pure: bool, key=None, prefix=None):
        # `function` is a PickledFunction: its bytes are what the token hashes
        """Build a task in the caller's thread: (key, spec, deps); raises early on bad input."""
        found: dict = {}
        kinds = (Future, RemoteData)
        args = replace_remote(tuple(args), found, kinds)
        kwargs = replace_remote(dict(kwargs), found, kinds) if kwargs else None
        for ref in found.values():
            self._check_ref(ref)
        if key is None:
            name = prefix if prefix is not None else funcname(function.function)
            if pure:
                token = tokenize(self.session.id, function.blob, args, kwargs, by_value_modules())
                key = f"{name}-{token}"
            else:
                key = f"{name}-{uuid.uuid4().hex}"
        deps = tuple(found)  # () for most tasks: no per-task list (client memory)
        return key, (function, args, kwargs, deps), deps

    def _check_ref(self, ref) -> None:
        if isinstance(ref, Future):
            if ref.executor is not self:
                raise ValueError(
                    f"{ref!r} belongs to another Executor; pass its result() or scatter it here"
                )
        elif isinstance(ref, RemoteData):
            if ref._session is not self.session:
                raise ValueError(
                    f"{ref!r} belongs to another client; gather it or scatter it to this Executor"
                )

    def _submit_tasks(self, tasks: dict, wants: list, restrictions=None, options=None) -> None:
        """Add tasks on the loop (from any thread); wants are counted before any release."""
        self._check_session()
        s = self.session
        s.call_soon(s.update_graph_or_fail, tasks, wants, restrictions, None, options)

    def submit(
        self,
        fn: Callable[..., Any],
        *args: Any,
        key: Hashable | None = None,
        pure: bool = True,
        workers: str | Iterable[str] | None = None,
        allow_other_workers: bool = False,
        retries: int | None = None,
        priority: float | None = None,
        resources: Mapping[str, float] | str | None = None,
        **kwargs: Any,
    ) -> Future:
        """Run ``fn(*args, **kwargs)`` on the cluster; returns a :class:`Future` at once.

        The scheduling keywords are for the task, never passed to `fn`:

        * ``key``: the task's name (default: the function's name and a token);
        * ``pure``: True (default) names the task by its function and
          arguments, so the same call is computed once; False gives a new key;
        * ``workers``: an address or a list of them the task must run on;
          with ``allow_other_workers=True`` they are only preferred;
        * ``retries``: how often to run the task again after it raised;
        * ``priority``: higher runs first among tasks ready at the same time;
        * ``resources``: ``{"GPU": 1}`` (or ``"GPU=1"``): run only on a worker
          that declared them (``dworker --resources``), while they are free.

        A bad value raises ``ValueError``/``TypeError`` here, naming it.

        .. versionchanged:: 0.2.0
           ``allow_other_workers``, ``retries``, ``priority``, ``resources``.
        """
        self._check_session()
        opts, restriction = options_and_restrictions(
            retries=retries,
            priority=priority,
            workers=workers,
            allow_other_workers=allow_other_workers,
            resources=resources,
        )
        function = prepickle(fn)
        key, spec, deps = self._prepare(function, args, kwargs, pure, key)
        restrictions = {key: restriction} if restriction is not None else None
        options = None if opts.is_default else {key: opts}
        self._submit_tasks({key: (spec, deps)}, [key], restrictions, options)
        return Future(key, self)

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        key: str | Iterable[Hashable] | None = None,
        pure: bool = True,
        workers: str | Iterable[str] | None = None,
        allow_other_workers: bool = False,
        retries: int | None = None,
        priority: float | None = None,
        resources: Mapping[str, float] | str | None = None,
        batch_size: int | None = None,
        timeout: float | None = None,
        chunksize: int = 1,
        **kwargs: Any,
    ) -> list[Future]:
        """``[submit(fn, *args, **kwargs) for args in zip(*iterables)]``: a list of Futures.

        Takes :meth:`submit`'s scheduling keywords, the same for every task
        (``key`` is a prefix string, or one key per task), none of them passed
        to `fn`, and:

        * ``batch_size``: the iterables are read lazily, this many items at a
          time (default 2000), each batch sent to the cluster before the next
          is read: a huge input is never all prepared at once.
        * ``timeout``: seconds from this call; tasks not finished by then are
          cancelled (their ``result()`` raises
          :class:`~distributed_client.CancelledError`), as
          ``concurrent.futures.Executor.map`` cancels what is left when its
          results time out.
        * ``chunksize``: accepted for ``concurrent.futures`` compatibility and
          ignored, as ``ThreadPoolExecutor`` does: each item is its own task
          already, and tasks are pipelined to workers in batches.

        .. versionchanged:: 0.2.0
           the scheduling keywords, ``batch_size``, ``timeout``, ``chunksize``.
        """
        self._check_session()
        if not iterables:
            raise TypeError("map() needs at least one iterable of arguments")
        batch_size, timeout = check_map_keywords(batch_size, timeout, chunksize)
        opts, restriction = options_and_restrictions(
            retries=retries,
            priority=priority,
            workers=workers,
            allow_other_workers=allow_other_workers,
            resources=resources,
        )
        prefix, names = map_key_names(key)
        function = prepickle(fn)
        futures: list[Future] = []
        for batch in batches(iterables, batch_size):
            tasks: dict = {}
            keys = []
            for args in batch:
                name = None
                if names is not None:
                    name = next(names, None)
                    if name is None:
                        raise ValueError("map(key=[...]) has fewer keys than there are tasks")
                k, spec, deps = self._prepare(function, args, kwargs, pure, name, prefix)
                tasks[k] = (spec, deps)
                keys.append(k)
            restrictions = dict.fromkeys(tasks, restriction) if restriction is not None else None
            options = None if opts.is_default else dict.fromkeys(tasks, opts)
            self._submit_tasks(tasks, keys, restrictions, options)
            futures.extend([Future(k, self) for k in keys])
        if timeout is not None and futures:
            self._cancel_after(timeout, [f.key for f in futures])
        return futures

    def _cancel_after(self, delay: float, keys: list) -> None:
        s = self.session
        s.call_soon(lambda: s.loop.call_later(delay, s.cancel, keys))

    # ------------------------------------------------------------------ control

    def cancel(self, futures: Future | Iterable[Future]) -> None:
        """Stop computing `futures` (and their queued dependents): CancelledError.

        Finished futures keep their value.

        .. versionadded:: 0.2.0
        """
        keys = [f.key for f in _as_futures(futures, self)]
        self._call_in_loop(self.session.cancel, keys)

    def retry(self, futures: Future | Iterable[Future]) -> Any:
        """Run erred `futures` again, with their erred inputs; others are left alone.

        Returns once the tasks are queued again (an awaitable for an
        asynchronous Executor).

        .. versionadded:: 0.2.0
        """
        fs = _as_futures(futures, self)
        return self._sync(self._retry, [f.key for f in fs])

    async def _retry(self, keys: list) -> None:
        if await retry_keys(self.session, keys):
            self._cf_epoch += 1  # what hooked futures were told is stale now

    # ------------------------------------------------------------------ data

    def gather(self, futures: Any, errors: str = "raise") -> Any:
        """Values of a Future, a list of Futures or a dict of them (same shape back)."""
        return self._sync(self._gather, futures, errors)

    async def _gather(self, futures, errors="raise"):
        if isinstance(futures, Future):
            return (await self._gather([futures], errors))[0]
        if isinstance(futures, Mapping):
            names = list(futures)
            values = await self._gather([futures[n] for n in names], errors)
            return dict(zip(names, values))
        items = list(futures)
        keys = [f.key if isinstance(f, (Future, RemoteData)) else f for f in items]
        for f in items:
            if isinstance(f, (Future, RemoteData)):
                self._check_ref(f)
        data = await self.session.gather(keys, errors=errors)
        return [data[k] for k in keys]

    def scatter(
        self, data: Any, replicas: int = 1, workers: str | Iterable[str] | None = None
    ) -> Any:
        """Put local data on the workers; Futures shaped like `data`.

        A dict gives a dict of Futures (its keys name the data); a list,
        tuple, set or an iterator is scattered elementwise (a list, tuple or
        set of Futures); any other object, ``bytes``, ``str`` and numpy arrays
        included, is one value: one Future (as in dask).

        .. versionchanged:: 0.2.0
           a single object (``bytes``, ``str``, an array, ...) makes one
           Future instead of one per element.
        """
        return self._sync(self._scatter, data, replicas, workers)

    async def _scatter(self, data, replicas=1, workers=None):
        session = self.session
        shape = scatter_shape(data)
        prefix = uuid.uuid4().hex
        if shape == "dict":
            payload = dict(data)
        elif shape == "one":
            payload = {f"{type(data).__name__}-{prefix}": data}
        else:
            payload = {f"{type(v).__name__}-{prefix}-{i}": v for i, v in enumerate(data)}
        await session.scatter(payload, replicas=replicas, workers=worker_list(workers))
        if shape == "dict":
            return {k: Future(k, self) for k in payload}
        futures = [Future(k, self) for k in payload]
        if shape == "one":
            return futures[0]
        if shape in (tuple, set, frozenset):
            return shape(futures)
        return futures

    # ------------------------------------------------------------------ cluster view

    def who_has(self, futures: Future | Iterable[Future] | None = None) -> dict:
        """``{key: [worker addresses]}``: where the data of `futures` is.

        For `futures`, what this client knows (exact: workers tell it when
        they finish); None: every key on the cluster, as the center knows it
        (workers report new keys to the center within about a
        ``heartbeat_interval``; at most ``center_timeout`` seconds).

        .. versionadded:: 0.2.0
        """
        if futures is None:
            return self._sync(self._center_query, "who_has")
        keys = [f.key for f in _as_futures(futures, self)]
        return self._sync(self._own_who_has, keys)

    async def _own_who_has(self, keys: list) -> dict:
        return self.session.state.who_has(keys)

    def has_what(self, workers: str | Iterable[str] | None = None) -> dict:
        """``{worker address: [keys]}`` as the center knows it (None: every worker).

        Like ``who_has()``, this follows what workers report to the center.

        .. versionadded:: 0.2.0
        """
        return self._sync(self._center_query, "has_what", workers=worker_list(workers))

    def ncores(self, workers: str | Iterable[str] | None = None) -> dict:
        """``{worker address: number of cores}`` from the center (None: every worker).

        .. versionadded:: 0.2.0
        """
        return self._sync(self._center_query, "ncores", workers=worker_list(workers))

    async def _center_query(self, op: str, **kwargs) -> dict:
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        answer = await self.session.center_call(op, **kwargs)
        if not isinstance(answer, dict):
            raise TypeError(f"center at {self.center} answered {op} with {answer!r:.100}")
        return answer

    def _repr_html_(self) -> str:
        return executor_html(self)

    # ------------------------------------------------------------------ datasets, files (issue 10)

    def publish_dataset(self, override: bool = False, **datasets: Any) -> None:
        """Name data for other clients: ``publish_dataset(name=future_or_value, ...)``.

        Futures inside the value (waited for first) keep their data on the
        cluster after this client closes; ``get_dataset(name)`` on any client
        of the center gives the object back with its own Futures. KeyError if a
        name is taken (unless ``override=True``). See ``_datasets.py``.
        """
        from . import _datasets

        return self._sync(_datasets.publish_dataset, self, datasets, override)

    def get_dataset(self, name: str) -> Any:
        """The object published as `name` (KeyError naming the known ones)."""
        from . import _datasets

        return self._sync(_datasets.get_dataset, self, name)

    def list_datasets(self) -> list:
        """The names of the published datasets, sorted."""
        from . import _datasets

        return self._sync(_datasets.list_datasets, self)

    def unpublish_dataset(self, name: str) -> None:
        """Forget `name`; its data is deleted once no client holds it."""
        from . import _datasets

        return self._sync(_datasets.unpublish_dataset, self, name)

    def upload_file(
        self, path: str | os.PathLike, load: bool = True, timeout: float | None = None
    ) -> dict:
        """Ship a ``.py``/``.zip``/``.egg``/``.pyz`` to every worker, now and later.

        Each worker puts it on ``sys.path`` and (re)imports it; workers that
        join later get it from the center. Returns ``{worker: [modules]}``;
        raises the import error of a worker that cannot import it. See ``_upload.py``.
        """
        from . import _upload

        filename, data = _upload.read_upload(path)
        return self._sync(_upload.upload_file, self, filename, data, load, timeout)

    # ------------------------------------------------------------------ graphs

    def get(self, dsk: Mapping, keys: Any, **kwargs: Any) -> Any:
        """Run a dask graph and return the results shaped like `keys` (``scheduler=``-ready).

        As with dask's own schedulers, a list of keys gives a tuple of results
        (nested lists give nested tuples). The graph is materialised and converted in the calling thread, as
        dask's own schedulers do. Per-task options (``retries``, ``priority``,
        ``workers``, ``allow_other_workers``, ``resources``) apply to every
        task of the graph; other keywords (which dask passes) are ignored.
        """
        return _dask.get(self, dsk, keys, **kwargs)

    def __call__(self, dsk: Mapping, keys: Any, **kwargs: Any) -> Any:
        """``dask.compute(x, scheduler=executor)``: dask calls its scheduler like ``get``."""
        if self.asynchronous:
            raise TypeError(
                "an asynchronous Executor cannot be dask's scheduler (dask calls it "
                "synchronously); use `await executor.compute(x)` or a blocking Executor"
            )
        return _dask.get(self, dsk, keys, **kwargs)

    def compute(
        self, collections: Any, optimize_graph: bool = True, sync: bool = False, **options: Any
    ) -> Any:
        """Start computing dask collections; a Future per collection (a list for a list).

        ``sync=True`` waits and returns the values instead. `options`:
        ``retries``, ``priority``, ``workers``, ``allow_other_workers``,
        ``resources``, for every task of the collections' graphs.
        """
        return _dask.compute(self, collections, optimize_graph, sync, **options)

    def persist(self, collections: Any, optimize_graph: bool = True, **options: Any) -> Any:
        """Start computing dask collections; the same collections backed by Futures.

        A collection for a collection (a list for a list), like
        dask.distributed's ``Client.persist``: the results stay on the
        workers, and computing the returned collections (or anything built
        on them) uses them there. `options` as in :meth:`compute`.
        """
        return _dask.persist(self, collections, optimize_graph, **options)

    # ------------------------------------------------------------------ lifecycle

    def shutdown(self, wait: bool = True) -> Any:
        """Disconnect; the data of this executor's futures is deleted on the cluster."""
        if wait and not self.asynchronous and self.session is not None and not self.session.closed:
            pass  # outstanding work is abandoned like dask.distributed's Client.close
        pool = self._callback_pool
        if pool is not None:
            pool.shutdown(wait=False)
        return self.close()

    def _run_callback(self, fn, future) -> None:
        if self.asynchronous:
            try:
                fn(future)
            except Exception:
                import logging

                logging.getLogger("distributed_client").exception("done callback failed")
            return
        with self._callback_lock:
            if self._callback_pool is None:
                self._callback_pool = concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix="distributed-client-callbacks"
                )
            pool = self._callback_pool
        try:
            pool.submit(_safe_call, fn, future)
        except RuntimeError:  # shut down
            pass


def _safe_call(fn, arg):
    try:
        fn(arg)
    except Exception:
        import logging

        logging.getLogger("distributed_client").exception("done callback failed")


def scatter_shape(data: Any) -> Any:
    """How ``scatter`` splits `data`: "dict", "one", or the type of its result."""
    if isinstance(data, Mapping):
        return "dict"
    if isinstance(data, (list, tuple, set, frozenset)):
        return type(data) if type(data) in (tuple, set, frozenset) else list
    if isinstance(data, (range, Iterator)):
        return list
    return "one"


def _as_futures(futures: Any, executor: Executor) -> list[Future]:
    """A Future or an iterable of them, as a list; each must belong to `executor`."""
    fs = [futures] if isinstance(futures, Future) else list(futures)
    for f in fs:
        if not isinstance(f, Future):
            raise TypeError(f"expected Futures, got {f!r:.100}")
        executor._check_ref(f)
    return fs


def fire_and_forget(futures: Future | Iterable[Future]) -> None:
    """Let the tasks of `futures` run to completion even when the Futures are dropped.

    The client holds each key until its task has finished (or failed), then
    releases it, so its result is deleted from the cluster once no other
    Future refers to it. Tasks of a client that closes stop with it.

    .. versionadded:: 0.2.0
    """
    fs = [futures] if isinstance(futures, Future) else list(futures)
    by_session: dict = {}
    for f in fs:
        if not isinstance(f, Future):
            raise TypeError(f"fire_and_forget takes Futures, got {f!r:.100}")
        f.executor._check_session()
        by_session.setdefault(f.executor.session, []).append(f.key)
    for s, keys in by_session.items():
        s.call_soon(_hold_until_done, s, keys)


def _hold_until_done(session, keys: list) -> None:
    """On the loop: one reference to each key, dropped when it is done."""
    if session.closed:
        return
    session.want(keys)

    def done(key):
        session.release([key])

    for k in keys:
        session.watch(k, done)
