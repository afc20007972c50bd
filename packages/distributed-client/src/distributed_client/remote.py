"""``RemoteData`` and the module-level ``scatter``, ``gather``, ``delete``, ``clear``."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from distributed_core import normalize_address

from ._session import Session, resolve_center
from ._sync import get_runner, on_exit

__all__ = ["RemoteData", "scatter", "gather", "delete", "clear"]

_STATUS = {
    "memory": "finished",
    "erred": "error",
    "waiting": "pending",
    "queued": "pending",
    "processing": "pending",
    "released": "pending",
}


class RemoteData:
    """A value that lives on a worker of the cluster, named by `key`.

    ``.get()`` fetches the value. RemoteData returned by ``scatter``,
    ``Pool.map``/``apply`` hold a reference: when the last RemoteData for a
    key is garbage collected the data is deleted on the cluster (in batches).
    A ``RemoteData(key, center)`` you build yourself only names existing data
    and never deletes it. Passing a RemoteData to ``Pool.map``/``apply`` or to
    an ``Executor`` uses the data where it is, without bringing it here.
    """

    __slots__ = ("key", "center", "_session", "__weakref__")

    def __init__(self, key: Hashable, center: Any, *, _session: Session | None = None) -> None:
        self.key = key
        self.center = normalize_address(center)
        self._session = _session

    @classmethod
    def _tracked(cls, key, session: Session) -> RemoteData:
        """A RemoteData holding one reference (already counted in `session`)."""
        rd = cls.__new__(cls)
        rd.key, rd.center, rd._session = key, session.center_address, session
        return rd

    def __repr__(self) -> str:
        return f"<RemoteData key={self.key!r} center={self.center} status={self.status}>"

    def __reduce__(self):
        # a copy sent elsewhere names the data but holds no reference
        return (RemoteData, (self.key, self.center))

    def __del__(self):
        s = self._session
        if s is not None:
            try:
                s.release_threadsafe([self.key])
            except Exception:  # interpreter exit
                pass

    @property
    def status(self) -> str:
        """``'pending'``, ``'finished'``, ``'error'``, or ``'unknown'`` (not tracked here)."""
        s = self._session
        if s is None or s.closed:
            return "unknown"
        st, exc = s.status_of(self.key)
        if st is None:
            return "unknown"
        if st == "erred":
            if type(exc).__name__ == "CancelledError":
                return "cancelled"
            if type(exc).__name__ == "LostDataError":
                return "lost"
        return _STATUS.get(st, st)

    def get(self, timeout: float | None = None) -> Any:
        """The value (blocking), or an awaitable of it in an asynchronous context.

        Raises the remote exception (with the remote traceback as its cause) if
        the computation failed.
        """
        s = self._session
        usable = s is not None and not s.closed and self.key in s.state.tasks
        if _in_loop():  # asynchronous context: an awaitable
            if usable and s.in_loop():
                return _await_timeout(_gather_one(s, self.key), timeout)
            return _await_timeout(_first(_gather(self.center, [self], None)), timeout)
        if usable and s.loop is get_runner().loop:
            return get_runner().run(_gather_one, s, self.key, timeout=timeout)
        return gather(self.center, [self], timeout=timeout)[0]


async def _gather_one(session: Session, key):
    return (await session.gather([key]))[key]


async def _first(coro):
    return (await coro)[0]


def _await_timeout(coro, timeout):
    return asyncio.wait_for(coro, timeout) if timeout is not None else coro


def _in_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


# --------------------------------------------------------------------------- default sessions

_sessions: dict = {}
_sessions_lock = threading.Lock()


async def default_session(center, security=None, **bounds) -> Session:
    """The module-level functions' session for `center` on the running loop.

    `bounds` (``center_timeout``, ``no_workers_timeout``; None for the
    default) select a session with those bounds.
    """
    center, bounds = resolve_center(center, **bounds)
    loop = asyncio.get_running_loop()
    key = (center, id(security), id(loop), tuple(sorted(bounds.items())))
    with _sessions_lock:
        s = _sessions.get(key)
    if s is not None and not s.closed and s.loop is loop:
        return s
    s = await Session.create(center, security=security, **bounds)
    with _sessions_lock:
        old = _sessions.get(key)
        if old is not None and not old.closed and old.loop is loop:
            await s.close()
            return old
        _sessions[key] = s
    return s


def _close_default_sessions() -> None:  # pragma: no cover - interpreter exit
    r = get_runner()
    for s in list(_sessions.values()):
        if s.loop is r.loop and not s.closed:
            try:
                r.run(s.close, True, 0.5, timeout=3)
            except Exception:
                pass


on_exit(_close_default_sessions)


def _run(coro_fn, *args, asynchronous: bool, timeout=None, **kwargs):
    if asynchronous:
        return _await_timeout(coro_fn(*args, **kwargs), timeout)
    return get_runner().run(coro_fn, *args, timeout=timeout, **kwargs)


# --------------------------------------------------------------------------- scatter


def scatter(
    center: Any,
    data: Any,
    key: str | None = None,
    *,
    replicas: int = 1,
    workers: Iterable[str] | None = None,
    security: Any = None,
    asynchronous: bool = False,
    timeout: float | None = None,
    center_timeout: float | None = None,
    no_workers_timeout: float | None = None,
) -> Any:
    """Put `data` on the cluster's workers; returns RemoteData.

    `data` is a list (or any iterable) of values, giving a list of RemoteData,
    or a dict ``{key: value}``, giving ``{key: RemoteData}`` stored under
    those keys. `key` is a prefix for generated keys. With ``replicas=2`` each
    value is stored on two workers, so losing one loses nothing.

    `center_timeout` bounds each call to the center (then
    :class:`~distributed_client.CenterTimeoutError`) and `no_workers_timeout`
    how long work waits while there is no live worker (then
    :class:`~distributed_client.NoWorkersError`); None: the defaults of
    ``distributed_core.timeouts.DEFAULTS``.

    >>> rds = scatter('127.0.0.1:8787', [1, 2, 3])  # doctest: +SKIP
    >>> rds[0].get()  # doctest: +SKIP
    1
    """
    conn = _conn(security, center_timeout, no_workers_timeout)
    return _run(
        _scatter, center, data, key, replicas, workers, conn,
        asynchronous=asynchronous, timeout=timeout,
    )  # fmt: skip


def _conn(security, center_timeout=None, no_workers_timeout=None) -> dict:
    """How the module functions' session connects (see default_session)."""
    return dict(
        security=security, center_timeout=center_timeout, no_workers_timeout=no_workers_timeout
    )


async def _scatter(center, data, key, replicas, workers, conn, session=None):
    session = session or await default_session(center, **(conn or {}))
    return await scatter_with(session, data, key, replicas, workers)


async def scatter_with(session: Session, data, key=None, replicas=1, workers=None):
    """Scatter through `session`; shared by the module function, Pool and Executor."""
    if isinstance(data, Mapping):
        payload = dict(data)
        await session.scatter(payload, replicas=replicas, workers=workers)
        return {k: RemoteData._tracked(k, session) for k in payload}
    values = list(data)
    prefix = f"{key or 'data'}-{uuid.uuid4().hex}"
    keys = [f"{prefix}-{i}" for i in range(len(values))]
    await session.scatter(dict(zip(keys, values)), replicas=replicas, workers=workers)
    return [RemoteData._tracked(k, session) for k in keys]


# --------------------------------------------------------------------------- gather


def gather(
    center: Any,
    remote_data_or_keys: Any,
    *,
    security: Any = None,
    asynchronous: bool = False,
    timeout: float | None = None,
    center_timeout: float | None = None,
    no_workers_timeout: float | None = None,
) -> Any:
    """Bring values here: a list of RemoteData or keys (or a dict of them) -> values.

    Raises ``KeyError`` naming keys that no worker holds, and the remote
    exception for a computation that failed. Values whose holders this
    process already knows are fetched without the center.

    `center_timeout` bounds each call to the center (then
    :class:`~distributed_client.CenterTimeoutError`) and `no_workers_timeout`
    how long work waits while there is no live worker (then
    :class:`~distributed_client.NoWorkersError`); None: the defaults of
    ``distributed_core.timeouts.DEFAULTS``.
    """
    conn = _conn(security, center_timeout, no_workers_timeout)
    return _run(
        _gather, center, remote_data_or_keys, conn,
        asynchronous=asynchronous, timeout=timeout,
    )  # fmt: skip


async def _gather(center, items, conn, session=None):
    if isinstance(items, Mapping):
        names = list(items)
        values = await _gather(center, [items[n] for n in names], conn, session)
        return dict(zip(names, values))
    if isinstance(items, (RemoteData, str, bytes, int)) or (
        isinstance(items, tuple) and not any(isinstance(i, RemoteData) for i in items)
    ):
        raise TypeError(
            f"gather takes a list of RemoteData or keys, got {type(items).__name__}: "
            f"{items!r:.100}; wrap a single one in a list"
        )
    items = list(items)
    loop = asyncio.get_running_loop()
    by_session: dict = {}
    others = []
    for item in items:
        if isinstance(item, RemoteData):
            s = item._session
            if s is not None and not s.closed and s.loop is loop and item.key in s.state.tasks:
                by_session.setdefault(s, []).append(item.key)
            else:
                others.append(item.key)
        else:
            others.append(item)
    results: dict = {}
    for s, keys in by_session.items():
        results.update(await s.gather(keys))
    if others:
        s = session or await default_session(center, **(conn or {}))
        refs = {i.key: i for i in items if isinstance(i, RemoteData)}
        results.update(await gather_keys(s, others, refs))
    return [results[i.key if isinstance(i, RemoteData) else i] for i in items]


async def gather_keys(session: Session, keys: list, refs=None) -> dict:
    """Gather keys that may not be known to `session` (asks the center who holds them).

    `refs`: ``{key: RemoteData}`` whose sessions may already know the holders.
    """
    keys = list(dict.fromkeys(keys))
    unknown = [k for k in keys if k not in session.state.tasks]
    known = [k for k in keys if k in session.state.tasks]
    if known:
        session.want(known)
    tracked = []
    try:
        if unknown:
            await session.track_remote_keys(unknown, refs, wants=True)
            tracked = unknown
        return await session.gather(keys)
    finally:
        session.release(known + tracked)


# --------------------------------------------------------------------------- delete / clear


def delete(
    center: Any,
    keys: Any,
    *,
    security: Any = None,
    asynchronous: bool = False,
    timeout: float | None = None,
    center_timeout: float | None = None,
) -> Any:
    """Delete data on the cluster: a list of keys or RemoteData.

    Waits at most `center_timeout` seconds for the center (then
    :class:`~distributed_client.CenterTimeoutError`).
    """
    conn = _conn(security, center_timeout)
    return _run(_delete, center, keys, conn, asynchronous=asynchronous, timeout=timeout)


async def _delete(center, keys, conn, session=None):
    if isinstance(keys, (RemoteData, str, bytes, int)):
        keys = [keys]
    keys = [k.key if isinstance(k, RemoteData) else k for k in keys]
    session = session or await default_session(center, **(conn or {}))
    await session.center_call("delete_data", keys=keys)
    return None


def clear(
    center: Any,
    *,
    security: Any = None,
    asynchronous: bool = False,
    timeout: float | None = None,
    center_timeout: float | None = None,
) -> Any:
    """Delete every key held by every worker of the cluster.

    Waits at most `center_timeout` seconds for the center (then
    :class:`~distributed_client.CenterTimeoutError`).
    """
    conn = _conn(security, center_timeout)
    return _run(_clear, center, conn, asynchronous=asynchronous, timeout=timeout)


async def _clear(center, conn, session=None):
    session = session or await default_session(center, **(conn or {}))
    has_what = await session.center_call("has_what")
    keys = list({k for ks in has_what.values() for k in ks})
    if keys:
        await session.center_call("delete_data", keys=keys)
    return None
