"""``Executor``: ``concurrent.futures``-style futures on the cluster."""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import uuid
from collections import namedtuple
from collections.abc import Iterable, Mapping

from . import _dask
from ._args import prepickle, replace_remote
from ._client import ClientBase
from ._tokenize import funcname, tokenize
from .errors import CancelledError, LostDataError
from .remote import RemoteData

__all__ = [
    "Executor",
    "Future",
    "as_completed",
    "wait",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "ALL_COMPLETED",
]

FIRST_COMPLETED = concurrent.futures.FIRST_COMPLETED
FIRST_EXCEPTION = concurrent.futures.FIRST_EXCEPTION
ALL_COMPLETED = concurrent.futures.ALL_COMPLETED

_CHUNK = 2000

DoneAndNotDoneFutures = namedtuple("DoneAndNotDoneFutures", "done not_done")


class Future:
    """A remote computation (or scattered data) named by ``key``.

    ``result(timeout)`` brings the value here (or raises the remote
    exception, with the remote traceback as its cause); ``exception()``,
    ``done()``, ``cancel()``, ``cancelled()``, ``add_done_callback(fn)`` as in
    :mod:`concurrent.futures`; ``status`` is ``'pending'``, ``'finished'``,
    ``'error'``, ``'cancelled'`` or ``'lost'``. Passing a Future to
    ``submit`` uses its data on the cluster. The data is deleted when the last
    Future for a key is garbage collected. With an asynchronous Executor,
    ``await future`` (or ``await future.result()``) gives the value.
    """

    __slots__ = ("key", "executor", "_released", "__weakref__")

    def __init__(self, key, executor: Executor):
        # the caller already counted one reference to `key` for this Future
        self.key = key
        self.executor = executor
        self._released = False

    def __repr__(self) -> str:
        return f"<Future key={self.key!r} status={self.status}>"

    def __dask_tokenize__(self):
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
        st = s.state.state_of(self.key)
        if st == "memory":
            return "finished"
        if st == "erred":
            exc = s.state.tasks[self.key].exception
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
        return self.status != "pending"

    def cancelled(self) -> bool:
        return self.status == "cancelled"

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

    def result(self, timeout: float | None = None):
        """The value; raises the remote exception, or TimeoutError after `timeout` s."""
        return self.executor._sync(self._result, timeout=timeout)

    def exception(self, timeout: float | None = None):
        """The exception the task raised, or None (waits until done)."""
        return self.executor._sync(self._exception, timeout=timeout)

    def __await__(self):
        return self._result().__await__()

    def cancel(self) -> bool:
        """Stop the computation; ``result()`` then raises CancelledError."""
        if self.done():
            return self.cancelled()
        self.executor._call_in_loop(self._session.cancel, [self.key])
        return True

    def add_done_callback(self, fn) -> None:
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
    :class:`~distributed_client.LocalCluster`. Other keyword arguments:
    ``security``, ``asynchronous``, ``timeout`` (to connect), ``name``.

    ``set_as_default=True`` (the default; blocking executors only) makes the
    executor dask's default scheduler until it closes, as dask.distributed's
    ``Client`` does: ``x.compute()`` and ``x.persist()`` then run on the
    cluster. ``persist``, ``compute`` and ``get`` run dask collections and
    graphs; ``dask.compute(x, scheduler=executor)`` works too.

    .. versionchanged:: 0.1.1
       ``center_timeout`` and ``no_workers_timeout``.

    .. versionchanged:: 0.2.0
       ``set_as_default``, ``persist``, ``compute(sync=True)``, per-task options.
    """

    def __init__(self, center, *, set_as_default: bool = True, **kwargs):
        super().__init__(center, **kwargs)
        self._callback_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._callback_lock = threading.Lock()
        if set_as_default and not self.asynchronous:
            _dask.set_default(self)  # dask's default scheduler until closed

    def close(self):
        """Close the connection (see ClientBase.close); no longer dask's default scheduler."""
        _dask.unset_default(self)
        return super().close()

    # ------------------------------------------------------------------ submitting

    def _prepare(self, function, args, kwargs, pure: bool, key=None):
        # `function` is a PickledFunction: its bytes are what the token hashes
        """Build a task in the caller's thread: (key, spec, deps); raises early on bad input."""
        found: dict = {}
        kinds = (Future, RemoteData)
        args = replace_remote(tuple(args), found, kinds)
        kwargs = replace_remote(dict(kwargs), found, kinds) if kwargs else None
        for ref in found.values():
            self._check_ref(ref)
        if key is None:
            name = funcname(function.function)
            if pure:
                key = f"{name}-{tokenize(self.session.id, function.blob, args, kwargs)}"
            else:
                key = f"{name}-{uuid.uuid4().hex}"
        deps = list(found)
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

    def _submit_tasks(self, tasks: dict, wants: list, restrictions=None) -> None:
        """Add tasks on the loop (from any thread); wants are counted before any release."""
        self._check_session()
        self.session.call_soon(self.session.update_graph_or_fail, tasks, wants, restrictions)

    def submit(self, fn, *args, pure: bool = True, workers=None, key=None, **kwargs) -> Future:
        """Run ``fn(*args, **kwargs)`` on the cluster; returns a :class:`Future` at once."""
        self._check_session()
        function = prepickle(fn)
        key, spec, deps = self._prepare(function, args, kwargs, pure, key)
        restrictions = {key: _norm_workers(workers)} if workers is not None else None
        self._submit_tasks({key: (spec, deps)}, [key], restrictions)
        return Future(key, self)

    def map(self, fn, *iterables: Iterable, pure: bool = True, workers=None, **kwargs) -> list:
        """``[submit(fn, *args, **kwargs) for args in zip(*iterables)]``, sent in one batch."""
        self._check_session()
        function = prepickle(fn)
        tasks = {}
        keys = []
        for args in zip(*iterables):
            key, spec, deps = self._prepare(function, args, kwargs, pure)
            tasks[key] = (spec, deps)
            keys.append(key)
        w = _norm_workers(workers)
        if len(tasks) == len(keys):
            # in chunks, so that the event loop never stops for long
            for i in range(0, len(keys), _CHUNK):
                ks = keys[i : i + _CHUNK]
                restrictions = {k: w for k in ks} if w is not None else None
                self._submit_tasks({k: tasks[k] for k in ks}, ks, restrictions)
        else:  # repeated (pure) keys: one batch counts their references right
            restrictions = {k: w for k in tasks} if w is not None else None
            self._submit_tasks(tasks, keys, restrictions)
        return [Future(k, self) for k in keys]

    # ------------------------------------------------------------------ data

    def gather(self, futures, errors: str = "raise"):
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

    def scatter(self, data, replicas: int = 1, workers=None):
        """Put local data on the workers: Futures (a list, or a dict for a dict)."""
        return self._sync(self._scatter, data, replicas, workers)

    async def _scatter(self, data, replicas=1, workers=None):
        session = self.session
        if isinstance(data, Mapping):
            payload = dict(data)
        else:
            prefix = uuid.uuid4().hex
            payload = {f"{type(v).__name__}-{prefix}-{i}": v for i, v in enumerate(data)}
        await session.scatter(payload, replicas=replicas, workers=_norm_workers(workers))
        if isinstance(data, Mapping):
            return {k: Future(k, self) for k in payload}
        return [Future(k, self) for k in payload]

    # ------------------------------------------------------------------ graphs

    def get(self, dsk, keys, **kwargs):
        """Run a dask graph and return the results shaped like `keys` (``scheduler=``-ready).

        As with dask's own schedulers, a list of keys gives a tuple of results
        (nested lists give nested tuples). The graph is materialised and converted in the calling thread, as
        dask's own schedulers do. Per-task options (``retries``, ``priority``,
        ``workers``, ``allow_other_workers``, ``resources``) apply to every
        task of the graph; other keywords (which dask passes) are ignored.
        """
        return _dask.get(self, dsk, keys, **kwargs)

    def __call__(self, dsk, keys, **kwargs):
        """``dask.compute(x, scheduler=executor)``: dask calls its scheduler like ``get``."""
        if self.asynchronous:
            raise TypeError(
                "an asynchronous Executor cannot be dask's scheduler (dask calls it "
                "synchronously); use `await executor.compute(x)` or a blocking Executor"
            )
        return _dask.get(self, dsk, keys, **kwargs)

    def compute(self, collections, optimize_graph: bool = True, sync: bool = False, **options):
        """Start computing dask collections; a Future per collection (a list for a list).

        ``sync=True`` waits and returns the values instead. `options`:
        ``retries``, ``priority``, ``workers``, ``allow_other_workers``,
        ``resources``, for every task of the collections' graphs.
        """
        return _dask.compute(self, collections, optimize_graph, sync, **options)

    def persist(self, collections, optimize_graph: bool = True, **options):
        """Start computing dask collections; the same collections backed by Futures.

        A collection for a collection (a list for a list), like
        dask.distributed's ``Client.persist``: the results stay on the
        workers, and computing the returned collections (or anything built
        on them) uses them there. `options` as in :meth:`compute`.
        """
        return _dask.persist(self, collections, optimize_graph, **options)

    # ------------------------------------------------------------------ lifecycle

    def shutdown(self, wait: bool = True):
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


def _norm_workers(workers):
    if workers is None:
        return None
    from distributed_core import normalize_address

    if isinstance(workers, str):
        workers = [workers]
    return [normalize_address(w) for w in workers]


# ---------------------------------------------------------------------- as_completed / wait


class as_completed:
    """Iterate over futures in the order they finish.

    ``for future in as_completed(futures)`` (blocking executors) or
    ``async for future in as_completed(futures)`` (asynchronous ones). With
    ``with_results=True`` yields ``(future, result)`` pairs (an exception is
    raised when a task failed). ``add(future)`` adds one while iterating.
    """

    def __init__(self, futures: Iterable[Future] = (), with_results: bool = False):
        self.with_results = with_results
        self._queue: queue.Queue = queue.Queue()
        self._aqueue: asyncio.Queue | None = None
        self._count = 0
        self._lock = threading.Lock()
        for f in futures:
            self.add(f)

    def add(self, future: Future) -> None:
        with self._lock:
            self._count += 1
        s = future._session
        s.call_soon(s.watch, future.key, lambda key, f=future: self._done(f))

    def _done(self, future) -> None:
        # runs on the session's loop
        if self._aqueue is not None:
            self._aqueue.put_nowait(future)
        else:
            self._queue.put(future)

    def __iter__(self):
        return self

    def __next__(self):
        with self._lock:
            if self._count == 0:
                raise StopIteration
            self._count -= 1
        f = self._queue.get()
        if self.with_results:
            return f, f.result()
        return f

    def __aiter__(self):
        self._aqueue = asyncio.Queue()
        while not self._queue.empty():  # anything that finished before
            self._aqueue.put_nowait(self._queue.get_nowait())
        return self

    async def __anext__(self):
        with self._lock:
            if self._count == 0:
                raise StopAsyncIteration
            self._count -= 1
        f = await self._aqueue.get()
        if self.with_results:
            return f, await f._result()
        return f

    def __len__(self) -> int:
        return self._count


def wait(futures: Iterable[Future], timeout: float | None = None, return_when=ALL_COMPLETED):
    """Wait for futures like :func:`concurrent.futures.wait`; ``(done, not_done)`` sets.

    Awaitable when the futures belong to an asynchronous Executor.
    """
    futures = list(futures)
    if not futures:
        return DoneAndNotDoneFutures(set(), set())
    executor = futures[0].executor
    if executor.asynchronous:
        return _wait(futures, timeout, return_when)
    return executor._runner.run(_wait, futures, timeout, return_when)


async def _wait(futures, timeout, return_when):
    loop = asyncio.get_running_loop()
    event = asyncio.Event()

    def check(_key=None):
        done = [f for f in futures if f.done()]
        if return_when == ALL_COMPLETED and len(done) == len(futures):
            event.set()
        elif return_when == FIRST_COMPLETED and done:
            event.set()
        elif return_when == FIRST_EXCEPTION and (
            any(f.status in ("error", "cancelled", "lost") for f in done)
            or len(done) == len(futures)
        ):
            event.set()

    for f in futures:
        f._session.watch(f.key, check)
    check()
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except asyncio.TimeoutError:
        pass
    del loop
    done = {f for f in futures if f.done()}
    return DoneAndNotDoneFutures(done, {f for f in futures if f not in done})
