"""The async driver around :class:`~distributed_client._state.SchedulerState`.

One :class:`Session` per client object (``Pool``, ``Executor``) or per
(center, event loop) for the module-level functions. It owns the connections
(one pool for the center and the workers), feeds tasks into the scheduling
state, sends what :meth:`SchedulerState.assign` decides as ``compute``
requests, feeds the replies back, and deletes released data in batches.

Everything here runs on the session's event loop; the only thread-safe entry
points are :meth:`Session.call_soon` and :meth:`Session.release_threadsafe`
(used by ``__del__`` of ``RemoteData``/``Future``, which may run in any
thread).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Hashable, Iterable, Mapping

from distributed_core import (
    CommClosedError,
    ConnectionPool,
    HandshakeError,
    normalize_address,
    rpc,
)
from distributed_core.logs import RateLimitFilter
from distributed_core.timeouts import DEFAULTS

from ._data import DataMixin, as_exception
from ._dispatch import DispatchMixin
from ._lanes import WorkerLink
from ._lease import Lease
from ._pipeline import PipelinePolicy
from ._state import SchedulerState
from .errors import CenterTimeoutError, NotACenterError

__all__ = ["Session", "as_exception", "resolve_center"]

logger = logging.getLogger("distributed_client")
# Repeated warnings ("lost worker ...", one per worker when many die) are
# rate-limited per message template: at most 3 per 10 s, then one line saying
# how many were suppressed (distributed_core.logs.RateLimitFilter).
if not any(isinstance(f, RateLimitFilter) for f in logger.filters):
    logger.addFilter(RateLimitFilter(period=10.0, burst=3))


def resolve_center(center, **bounds) -> tuple[str, dict]:
    """``(address, session bounds)`` for what a client was given as its center.

    `center` is an address, or an object with a ``center_address`` (a
    :class:`~distributed_client.LocalCluster`), whose ``no_workers_timeout``
    and ``center_timeout`` are then the defaults. `bounds` given as ``None``
    are left to those defaults.
    """
    defaults = {}
    address = getattr(center, "center_address", None)
    if isinstance(address, str) and address:
        for name in ("center_timeout", "no_workers_timeout"):
            value = getattr(center, name, None)
            if value is not None:
                defaults[name] = value
        center = address
    out = {**defaults, **{k: v for k, v in bounds.items() if v is not None}}
    return normalize_address(center), out


class Session(DataMixin, DispatchMixin):
    """A connection to one cluster and the client-side scheduler that drives it.

    Create with ``await Session.create(center)`` on a running loop.

    Bounds (names and defaults from ``distributed_core.timeouts.DEFAULTS``):
    every call that needs the center waits at most `center_timeout` seconds
    (retrying a refused or broken connection meanwhile), then raises
    :class:`~distributed_client.CenterTimeoutError`; queued tasks wait at most
    `no_workers_timeout` seconds while there is no live worker, then fail
    with :class:`~distributed_client.NoWorkersError`; a task whose worker
    died `allowed_failures` times raises
    :class:`~distributed_client.KilledWorker`.
    """

    #: how often the worker list is refreshed from the center (seconds)
    refresh_interval = 1.0
    #: seconds a failed worker is ignored while the center still lists it
    gone_grace = 5.0
    #: seconds of work kept waiting at each worker for short tasks (see PipelinePolicy.on_reply)
    pipeline_cover = 0.003
    #: tasks are sent ahead of their inputs only to workers whose tasks take
    #: less than this on average (seconds): a compute waiting for its inputs
    #: holds its connection, and waits at most the worker's fetch_timeout
    ahead_max_task_time = 0.5

    def __init__(
        self,
        center,
        *,
        security=None,
        connect_timeout: float = DEFAULTS.connect_timeout,
        worker_connect_timeout: float = 1.0,
        allowed_failures: int = DEFAULTS.allowed_failures,
        center_timeout: float = DEFAULTS.center_timeout,
        no_workers_timeout: float | None = DEFAULTS.no_workers_timeout,
        name: str | None = None,
    ):
        self.center_address = normalize_address(center)
        self.security = security
        self.connect_timeout = connect_timeout
        if center_timeout is None or center_timeout <= 0:
            raise ValueError(f"center_timeout must be a number > 0, got {center_timeout!r}")
        self.center_timeout = float(center_timeout)
        if no_workers_timeout is not None and no_workers_timeout < 0:
            raise ValueError(f"no_workers_timeout must be >= 0, got {no_workers_timeout!r}")
        self.id = uuid.uuid4().hex[:10]
        self.name = name or f"client-{self.id}"
        self.state = SchedulerState(
            allowed_failures=allowed_failures,
            no_workers_timeout=no_workers_timeout,
            clock=time.monotonic,
            center=self.center_address,
        )
        self.state.gone_grace = self.gone_grace
        self.center_pool = ConnectionPool(
            limit=16, security=security, connect_timeout=connect_timeout, name=self.name
        )
        self._center_rpc = rpc(self.center_address, pool=self.center_pool)
        self.pool = ConnectionPool(
            limit=512,
            security=security,
            connect_timeout=worker_connect_timeout,
            name=self.name,
            client=self.id,  # workers report what we store as ours (issue 10, _lease.py)
        )
        self.lease = Lease(self)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.status = "created"
        self._wait_futures: set[asyncio.Future] = set()
        self._watchers: dict[Hashable, list] = defaultdict(list)
        self._kicked = False
        self._tasks: set[asyncio.Task] = set()
        self._inbox_lock = threading.Lock()
        self._inbox: deque = deque()  # (fn, args), or (None, keys) for releases
        self._inbox_scheduled = False
        self._to_delete: dict[Hashable, set] = {}
        self._deleting: dict[Hashable, asyncio.Future] = {}
        self._delete_task: asyncio.Task | None = None
        self._refresh_task: asyncio.Task | None = None
        self._refresh_now: asyncio.Event | None = None
        self._workers_event: asyncio.Event | None = None
        self._links: dict[str, WorkerLink] = {}
        #: in-flight depth and ahead dispatch per worker (policy, no I/O)
        self.pipeline = PipelinePolicy(self.pipeline_cover, self.ahead_max_task_time)
        #: worker -> connections of requests in progress (aborted when it is gone)
        self._calls: dict[str, set] = defaultdict(set)
        #: the timer that calls SchedulerState.expire, and when it fires
        self._deadline_handle: asyncio.TimerHandle | None = None
        self._deadline_at: float | None = None

    def __repr__(self) -> str:
        return (
            f"<Session {self.center_address} {self.status} workers={len(self.state.workers)} "
            f"tasks={len(self.state.tasks)}>"
        )

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    async def create(cls, center, **kwargs) -> Session:
        self = cls(center, **kwargs)
        await self.start()
        return self

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._refresh_now = asyncio.Event()
        self._workers_event = asyncio.Event()
        try:
            await self._first_contact()
        except (HandshakeError, NotACenterError, CenterTimeoutError):
            # wrong secret/TLS/protocol, a worker's address, a silent peer: says so itself
            await self._close_pools()
            self.status = "closed"
            raise
        except (CommClosedError, OSError) as e:
            await self._close_pools()
            self.status = "closed"
            raise OSError(
                f"could not reach a center at {self.center_address} within "
                f"{self.connect_timeout}s ({e}); is a center running there? "
                f"(start one with `python -m distributed_center`, or use LocalCluster())"
            ) from None
        self.status = "running"
        self.lease.start()

    async def _first_contact(self) -> None:
        """The first call to the center; tells a worker's address from a center's."""
        try:
            await self.refresh_workers(retry=False)
        except Exception as e:
            if "unknown op" not in str(e):
                raise
            # something that serves ops but not the center's: ask what it is
            try:
                ident = await self.center_call("identity", retry=False)
            except Exception:
                ident = None
            kind = ident.get("type") if isinstance(ident, dict) else None
            if kind == "Worker":
                its = ident.get("center")
                hint = f" (its center is at {its})" if its else ""
                raise NotACenterError(
                    f"{self.center_address} is a worker, not a center{hint}: pass the "
                    f"center's address to the client, e.g. Executor({str(its or 'CENTER')!r})"
                ) from None
            raise NotACenterError(
                f"{self.center_address} is not a center (it is {kind or 'unknown'}: it "
                f"answered the center's 'ncores' op with {e}); pass the center's address"
            ) from None

    async def close(self, release: bool = True, timeout: float = 5.0) -> None:
        """Stop, delete the data this session still holds (with `release`), close connections.

        Deleting waits at most `timeout` seconds (the cluster may be gone).
        """
        if self.status in ("closing", "closed"):
            return
        self.status = "closing"
        if self._refresh_task is not None:
            self._refresh_task.cancel()
        for t in list(self._tasks):
            t.cancel()
        # the center releases what it holds for us (results still to come too): in
        # parallel with our own deletes, within the same `timeout` (_lease.py)
        leased = asyncio.ensure_future(self.lease.close(release, timeout))
        if release:
            keys: dict = {}
            for key, holders in self.state.take_report().delete.items():
                keys.setdefault(key, set()).update(holders)
            for key, holders in self._to_delete.items():
                keys.setdefault(key, set()).update(holders)
            self._to_delete.clear()
            for key, ts in list(self.state.tasks.items()):
                if ts.who_has and not ts.borrowed:
                    keys.setdefault(key, set()).update(ts.who_has)
            if self._delete_task is not None and not self._delete_task.done():
                # a batch already on its way: let it arrive
                try:
                    await asyncio.wait_for(asyncio.shield(self._delete_task), timeout)
                except Exception:
                    pass
            if keys:
                try:
                    await asyncio.wait_for(self._delete(keys), timeout)
                except Exception as e:
                    logger.info("could not delete %d keys while closing: %s", len(keys), e)
        await leased
        if self._delete_task is not None:
            self._delete_task.cancel()
        if self._deadline_handle is not None:
            self._deadline_handle.cancel()
            self._deadline_handle = None
        for link in self._links.values():
            link.close()
        self._links.clear()
        tasks = [t for t in (self._refresh_task, self._delete_task, *self._tasks) if t is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        err = RuntimeError(f"the client connected to {self.center_address} was closed")
        for f in self._wait_futures:
            if not f.done():
                f.set_exception(err)
        self._wait_futures.clear()
        self._watchers.clear()
        await self._close_pools()
        self.status = "closed"

    async def _close_pools(self) -> None:
        await self.pool.close()
        await self.center_pool.close()

    @property
    def closed(self) -> bool:
        return self.status in ("closing", "closed")

    # ------------------------------------------------------------------ thread-safe entry points

    def in_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def call_soon(self, fn, *args) -> None:
        """Run ``fn(*args)`` on the session's loop (directly when already there).

        Calls from other threads run in the order they were made, together
        with :meth:`release_threadsafe`, so a reference dropped after a
        submission is never processed before that submission.
        """
        if self.in_loop():
            fn(*args)
        else:
            self._post((fn, args))

    def release_threadsafe(self, keys: Iterable[Hashable]) -> None:
        """Drop one reference to each key, from any thread; batched."""
        if self.closed or self.loop is None or self.loop.is_closed():
            return
        with self._inbox_lock:
            inbox = self._inbox
            if inbox and inbox[-1][0] is None:
                inbox[-1][1].extend(keys)  # coalesce consecutive releases
            else:
                inbox.append((None, list(keys)))
            if self._inbox_scheduled:
                return
            self._inbox_scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._drain_inbox)
        except RuntimeError:  # loop closed meanwhile (interpreter exit)
            pass

    def _post(self, item) -> None:
        if self.loop is None or self.loop.is_closed():
            return
        with self._inbox_lock:
            self._inbox.append(item)
            if self._inbox_scheduled:
                return
            self._inbox_scheduled = True
        self.loop.call_soon_threadsafe(self._drain_inbox)

    def _drain_inbox(self) -> None:
        with self._inbox_lock:
            items, self._inbox = self._inbox, deque()
            self._inbox_scheduled = False
        for fn, args in items:
            if fn is None:
                if not self.closed:
                    self.state.release(args)
                    self._kick()
            else:
                try:
                    fn(*args)
                except Exception:
                    logger.exception("error in %r", fn)
        if self._kicked:
            self._process()  # now rather than one loop iteration later

    # ------------------------------------------------------------------ feeding the state (loop thread)

    def update_graph(
        self, tasks: Mapping, wants: Iterable = (), restrictions=None, order=None, options=None
    ):
        """Add tasks ``{key: ((function, args, kwargs, needed), deps)}``; see SchedulerState.

        `options` maps keys to their :class:`~distributed_client._options.TaskOptions`.
        """
        self._check_open()
        self.state.update_graph(
            tasks, wants=wants, restrictions=restrictions, order=order, options=options
        )
        self._kick()

    def update_graph_or_fail(
        self, tasks: Mapping, wants=(), restrictions=None, order=None, options=None
    ):
        """Like update_graph, but a bad graph fails its wanted keys instead of raising.

        For requests queued from other threads, whose caller cannot see an
        exception raised here.
        """
        try:
            self.update_graph(tasks, wants, restrictions, order, options)
        except Exception as e:
            self.state.add_failed(wants, e)
            self._kick()

    def want(self, keys) -> None:
        self._check_open()
        self.state.want(keys)
        self._kick()

    def release(self, keys) -> None:
        if not self.closed:
            self.state.release(keys)
            self._kick()

    def cancel(self, keys) -> None:
        if not self.closed:
            self.state.cancel(keys)
            self._kick()

    def status_of(self, key: Hashable) -> tuple:
        """``(state, exception)`` of `key` for reads from any thread (the one snapshot).

        See :meth:`SchedulerState.status_of`: one atomic lookup, never a
        ``KeyError`` while the loop thread changes the state.
        """
        return self.state.status_of(key)

    def watch(self, key: Hashable, callback) -> None:
        """Call ``callback(key)`` on the loop once `key` is in memory or erred."""
        st = self.state.state_of(key)
        if st in ("memory", "erred") or st is None:
            callback(key)
        else:
            self._watchers[key].append(callback)

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError(f"the client connected to {self.center_address} is closed")

    # ------------------------------------------------------------------ the engine

    def _kick(self) -> None:
        if not self._kicked and self.loop is not None:
            self._kicked = True
            self.loop.call_soon(self._process)

    def _process(self) -> None:
        if not self._kicked:
            return  # already done (see _drain_inbox)
        self._kicked = False
        if self.closed:
            return
        report = self.state.take_report()
        if report.delete:
            self._delete_soon(report.delete)
        for key in report.done:
            self._notify(key)
        for key in report.erred:
            self._notify(key)
        for key in report.forgotten:
            self._notify(key)
        for worker, key in self.state.assign():
            self._send_compute(worker, key)
        if (self.state.unplaced or self.state.unplaced_urgent) and self.state.workers:
            self._kick()  # place the rest in a later loop iteration
        if self._busy():
            self._ensure_refresher()
            if not self.state.workers:
                self._refresh_now.set()
        self._schedule_deadline()
        again = self.state.take_report()  # assign() never reports, but be safe
        if again:
            self._report_again(again)

    def _schedule_deadline(self) -> None:
        """Make sure SchedulerState.expire runs at its next deadline (no_workers_timeout)."""
        deadline = self.state.next_deadline()
        if deadline == self._deadline_at:
            return
        if self._deadline_handle is not None:
            self._deadline_handle.cancel()
            self._deadline_handle = None
        self._deadline_at = deadline
        if deadline is not None:
            delay = max(0.0, deadline - self.state.clock())
            self._deadline_handle = self.loop.call_later(delay, self._on_deadline)

    def _on_deadline(self) -> None:
        self._deadline_handle = None
        self._deadline_at = None
        if self.closed:
            return
        self.state.expire()
        self._kicked = True
        self._process()

    def _report_again(self, report) -> None:
        if report.delete:
            self._delete_soon(report.delete)
        for key in report.done + report.erred + report.forgotten:
            self._notify(key)

    def _notify(self, key) -> None:
        st = self.state.state_of(key)
        if st not in ("memory", "erred") and st is not None:
            return
        cbs = self._watchers.pop(key, None)
        if cbs:
            for cb in cbs:
                try:
                    cb(key)
                except Exception:
                    logger.exception("callback for %r failed", key)
