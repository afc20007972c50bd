"""What Pool and Executor share: a Session, and blocking or awaitable calls."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any, TypeVar

from distributed_core import config

from ._center_arg import choose_center
from ._session import Session, resolve_center
from ._sync import get_runner, on_exit

__all__ = ["ClientBase"]

_C = TypeVar("_C", bound="ClientBase")

_open_sync_clients: set = set()


def _close_all_sync_clients() -> None:  # pragma: no cover - interpreter exit
    for c in list(_open_sync_clients):
        try:
            c._close_at_exit()
        except Exception:
            pass


on_exit(_close_all_sync_clients)


class ClientBase:
    """A connection to a cluster's center, usable blocking or with ``await``.

    Blocking (default): the session runs on a shared event loop in a daemon
    thread (``distributed_core.LoopRunner``) and methods block until done.

    ``asynchronous=True``: create it inside a running event loop and
    ``await`` it (or use ``async with``); its methods then return awaitables.

    Parameters
    ----------
    center
        the center's address (``'host:port'``, ``'tcp://host:port'``,
        ``(host, port)``), or a :class:`~distributed_client.LocalCluster`
        or :class:`~distributed_client.SSHCluster` (whose
        ``no_workers_timeout`` and ``security`` are then the defaults). Left
        out (None): the configured ``client.address`` (environment variable
        ``DISTRIBUTED_CLIENT__ADDRESS``), else a new LocalCluster that the
        client owns (``.cluster``) and closes when it closes.
    timeout
        seconds to connect to the center (``connect_timeout``).
    center_timeout
        seconds any call that needs the center waits for it (default: the
        configured ``timeouts.center_timeout``, 10), then
        :class:`~distributed_client.CenterTimeoutError`. Calls that do not
        need the center (gathering results) keep working meanwhile.
    no_workers_timeout
        seconds a task waits while the cluster has no live worker (default:
        the configured ``timeouts.no_workers_timeout``, 30), then
        :class:`~distributed_client.NoWorkersError`.
    allowed_failures
        deaths of workers running a task before it raises
        :class:`~distributed_client.KilledWorker` (default 3).

    .. versionchanged:: 0.1.1
       ``center_timeout`` and ``no_workers_timeout``; a LocalCluster is
       accepted as `center`.
    """

    def __init__(
        self,
        center: Any = None,
        *,
        security: Any = None,
        asynchronous: bool = False,
        timeout: float | None = None,
        name: str | None = None,
        allowed_failures: int | None = None,
        center_timeout: float | None = None,
        no_workers_timeout: float | None = None,
    ) -> None:
        # None: the configured defaults (distributed_core.config; 5 s and 3)
        if timeout is None:
            timeout = config.get("timeouts.connect_timeout")
        if allowed_failures is None:
            allowed_failures = config.get("timeouts.allowed_failures")
        # no center: the configured client.address, else a LocalCluster of our own
        center, security, self._own_cluster = choose_center(center, security, asynchronous)
        self._bound_args = {
            "center_timeout": center_timeout,
            "no_workers_timeout": no_workers_timeout,
        }
        self.security = security
        self.asynchronous = asynchronous
        self._timeout = timeout
        self._session_kwargs: dict[str, Any] = dict(
            security=security,
            connect_timeout=timeout,
            name=name,
            allowed_failures=allowed_failures,
        )
        self.center: str | None = None
        self.session: Session | None = None
        self._runner = None
        if asynchronous and self._own_cluster is not None:
            return  # the cluster starts in _start
        self._resolve(center)
        if not asynchronous:
            self._runner = get_runner()
            try:
                self.session = self._runner.run(Session.create, self.center, **self._session_kwargs)
            except BaseException:
                self._close_own_cluster()
                raise
            _open_sync_clients.add(self)

    def _resolve(self, center: Any) -> None:
        self.center, bounds = resolve_center(center, **self._bound_args)
        for bound in ("center_timeout", "no_workers_timeout"):
            bounds.setdefault(bound, config.get(f"timeouts.{bound}"))
        self._session_kwargs.update(bounds)

    def _close_own_cluster(self) -> None:
        if self._own_cluster is not None:
            self._own_cluster.close()  # idempotent

    @property
    def cluster(self) -> Any:
        """The LocalCluster this client started (``Executor()``), else None.

        It is closed when the client closes.
        """
        return self._own_cluster

    # ------------------------------------------------------------------ start/stop

    async def _start(self):
        if self.session is None:
            if self.center is None:  # our own LocalCluster, asynchronous
                try:
                    self._resolve(await self._own_cluster)
                    self.session = await Session.create(self.center, **self._session_kwargs)
                except BaseException:
                    await asyncio.get_running_loop().run_in_executor(None, self._close_own_cluster)
                    raise
            else:
                self.session = await Session.create(self.center, **self._session_kwargs)
        return self

    def __await__(self) -> Generator[Any, None, Any]:
        return self._start().__await__()

    async def __aenter__(self: _C) -> _C:
        await self._start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._aclose()

    def __enter__(self: _C) -> _C:
        if self.asynchronous:
            raise RuntimeError("an asynchronous client is used with `async with`, not `with`")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _aclose(self) -> None:
        try:
            if self.session is not None:
                await self.session.close()
        finally:
            if self._own_cluster is not None:
                await asyncio.get_running_loop().run_in_executor(None, self._close_own_cluster)

    def close(self) -> Any:
        """Close the connection; the data this client computed or scattered is deleted."""
        _open_sync_clients.discard(self)
        if self.asynchronous:
            return self._aclose()
        try:
            if self.session is None:
                return None
            s = self.session
            if self._runner is not None and self._runner.thread.is_alive() and not s.closed:
                self._runner.run(s.close)
        finally:
            self._close_own_cluster()
        return None

    def _close_at_exit(self) -> None:
        if self.session is not None and not self.session.closed:
            self._runner.run(self.session.close, True, 0.5, timeout=3)

    @property
    def status(self) -> str:
        return "created" if self.session is None else self.session.status

    # ------------------------------------------------------------------ cluster view

    def scheduler_info(self) -> Any:
        """What the center knows of the cluster, with each worker's memory.

        ``{'center': address, 'workers': {address: {'name', 'ncores', 'nkeys',
        'nbytes', 'memory': {'rss', 'managed', 'unmanaged', 'spilled',
        'limit'}, 'paused', 'last_seen'}}}``, from the center's last heartbeat
        of each worker (about a ``heartbeat_interval`` old). ``managed`` is
        the bytes of values held in memory, ``spilled`` of values on disk
        (both as measured in memory), ``unmanaged`` the rest of the process's
        memory; ``limit`` is None for a worker without a memory limit. A
        field a worker does not report (older workers) is None. At most
        ``center_timeout`` seconds (:class:`~distributed_client.CenterTimeoutError`).

        .. versionadded:: 0.2.0
        """
        return self._sync(self._scheduler_info)

    async def _scheduler_info(self) -> dict:
        workers = await self.session.center_call("workers")
        if not isinstance(workers, dict):
            raise TypeError(f"center at {self.center} answered workers with {workers!r:.100}")
        info = {}
        for address, w in workers.items():
            w = w if isinstance(w, dict) else {}
            m = w.get("metrics") if isinstance(w.get("metrics"), dict) else {}
            info[address] = {
                "name": w.get("name"),
                "ncores": w.get("ncores"),
                "nkeys": w.get("nkeys"),
                "nbytes": w.get("nbytes"),
                "memory": {
                    "rss": m.get("memory"),
                    "managed": m.get("memory_managed"),
                    "unmanaged": m.get("memory_unmanaged"),
                    "spilled": m.get("memory_spilled"),
                    "limit": m.get("memory_limit"),
                },
                "paused": m.get("paused"),
                "resources": w.get("resources") or {},
                "last_seen": w.get("last_seen"),
            }
        return {"center": self.center, "workers": info}

    # ------------------------------------------------------------------ plumbing

    def _sync(self, coro_fn, *args, timeout=None, **kwargs):
        """Blocking: run on the loop thread and wait. Asynchronous: return the awaitable."""
        if self.asynchronous:
            coro = self._with_session(coro_fn, *args, **kwargs)
            if timeout is not None:
                return asyncio.wait_for(coro, timeout)
            return coro
        self._check_session()
        return self._runner.run(coro_fn, *args, timeout=timeout, **kwargs)

    async def _with_session(self, coro_fn, *args, **kwargs):
        await self._start()
        return await coro_fn(*args, **kwargs)

    def _check_session(self) -> None:
        if self.session is None:
            raise RuntimeError(
                f"{type(self).__name__} is not started: await it first "
                f"(`client = await {type(self).__name__}(..., asynchronous=True)`)"
            )
        if self.session.closed:
            raise RuntimeError(f"{type(self).__name__} connected to {self.center} is closed")

    def _call_in_loop(self, fn, *args):
        """Run a plain function on the session's loop; return its result (blocking form)."""
        self._check_session()
        if self.asynchronous or self.session.in_loop():
            return fn(*args)

        async def run():
            return fn(*args)

        return self._runner.run(run)

    def __repr__(self) -> str:
        s = self.session
        workers = len(s.state.workers) if s is not None else 0
        return f"<{type(self).__name__} center={self.center} workers={workers} {self.status}>"
