"""``get``: run a dask graph on the cluster.

::

    from functools import partial
    get(center, {'x': 1, 'y': (inc, 'x')}, 'y')            # -> 2
    dask.compute(collection, scheduler=partial(get, center))

See :mod:`distributed_client._graph` for the graph forms accepted. Keys are
renamed on the cluster (``name-<graph id>-<n>``), so two graphs that use the
same key names never mix, even from different clients.
"""

from __future__ import annotations

import uuid
from typing import Any

from ._args import PickledFunction, prepickle
from ._graph import External, normalize_graph, pack_results
from ._session import Session
from .remote import _conn, _run, default_session

__all__ = ["get"]


def get(
    center: Any,
    dsk: Any,
    keys: Any,
    *,
    security: Any = None,
    asynchronous: bool = False,
    timeout: float | None = None,
    center_timeout: float | None = None,
    no_workers_timeout: float | None = None,
    **kwargs: Any,
) -> Any:
    """Compute `keys` of the graph `dsk` on the cluster; results shaped like `keys`.

    `keys` is one key or a (nested) list of keys. Bad graphs (a cycle, a
    missing dependency, unknown output keys, unpicklable functions) raise
    before anything is sent. If a task raises, its exception is raised here
    with the remote traceback as its cause. Extra keyword arguments (which
    ``dask.compute`` may pass) are ignored.

    `center_timeout` bounds each call to the center (then
    :class:`~distributed_client.CenterTimeoutError`); `no_workers_timeout`
    how long tasks wait while there is no live worker (then
    :class:`~distributed_client.NoWorkersError`); None: the defaults of
    ``distributed_core.timeouts.DEFAULTS`` (10 s and 30 s). `center` may be a
    :class:`~distributed_client.LocalCluster`.

    .. versionchanged:: 0.1.1
       ``center_timeout`` and ``no_workers_timeout``.
    """
    conn = _conn(security, center_timeout, no_workers_timeout)
    # in the caller's thread, as dask's schedulers do (materialising a graph may
    # need locks the caller holds); errors before connecting
    g = normalize_graph(dsk, keys)
    return _run(_get, center, g, keys, conn, asynchronous=asynchronous, timeout=timeout)


async def _get(center, g, keys, conn):
    session = await default_session(center, **conn)
    return await get_with(session, g, keys)


def graph_tasks(g, prefix: str | None = None) -> tuple[dict, dict, list]:
    """Turn a normalized graph into session tasks: ``(tasks, keymap, order)``."""
    gid = prefix or uuid.uuid4().hex[:16]
    keymap = {}
    external = set()
    for i, k in enumerate(g.order):
        call = g.calls[k]
        if type(call) is External:  # data already on the cluster: no task
            keymap[k] = call.cluster_key
            external.add(k)
        else:
            keymap[k] = f"{_short_name(k)}-{gid}-{i}"
    pickled: dict = {}
    tasks = {}
    for k in g.order:
        if k in external:
            continue
        call = g.calls[k]
        args, kwargs, needed = call.translate(keymap)
        tasks[keymap[k]] = ((_prepickled(call.function, pickled), args, kwargs, needed), needed)
    return tasks, keymap, [keymap[k] for k in g.order if k not in external]


async def get_with(session: Session, g, keys):
    """Run the normalized graph `g` through `session` and return results shaped like `keys`."""
    tasks, keymap, order = graph_tasks(g)
    outputs = list(dict.fromkeys(keymap[k] for k in g.keys))
    session.update_graph(tasks, wants=outputs, order=order)
    try:
        data = await session.gather(outputs)
    finally:
        session.release(outputs)
    return pack_results(keys, {k: data[keymap[k]] for k in g.keys})


def _prepickled(function, cache: dict):
    """Pickle each distinct function of a graph once (and fail early if it cannot be)."""
    if isinstance(function, PickledFunction):
        return function
    f = cache.get(id(function))
    if f is None:
        f = cache[id(function)] = prepickle(function)
    return f


def _short_name(key) -> str:
    if isinstance(key, tuple) and key:
        key = key[0]
    if isinstance(key, bytes):
        key = key.decode(errors="replace")
    name = str(key)
    return name[:40]
