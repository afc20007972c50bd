"""dask on an :class:`~distributed_client.Executor`: ``get``, ``compute``, ``persist``, default.

Everything that turns a dask collection or graph into tasks runs in the
**caller's thread**, as dask's own schedulers do: materialising a graph
(``__dask_graph__()``, expression optimisation) may take locks the caller
holds (a ``functools.cached_property`` of a dask-expr collection), so doing it
on the event loop's thread could deadlock. Only the ready tasks go to the loop.

``persist`` returns collections whose graphs hold :class:`Future` objects
(``{key: Future}``, as dask.distributed's ``Client.persist`` does); a later
``get``/``compute`` on this Executor uses that data where it is instead of
computing it again.

While an Executor created with ``set_as_default=True`` (the default) is open,
it is dask's default scheduler (``dask.config`` ``scheduler``), and dataframe
shuffles use the ``"tasks"`` method (the ``"disk"`` default writes to the
client's local disk, which workers elsewhere cannot read). Closing it restores
the previous configuration, or the Executor registered before it if that one
is still open.
"""

from __future__ import annotations

import importlib.util
import threading
import uuid
from collections.abc import Mapping

from ._graph import flatten_keys, normalize_graph
from ._options import task_options
from .graph import graph_tasks

__all__ = ["get", "compute", "persist", "set_default", "unset_default", "OPTION_NAMES"]

#: keywords of get/compute/persist that become per-task options (others are ignored,
#: as dask passes its own scheduler keywords such as ``num_workers``)
OPTION_NAMES = ("retries", "priority", "workers", "allow_other_workers", "resources")


def _options(tasks: Mapping, kwargs: Mapping):
    """``{key: TaskOptions}`` for every task of a graph, or None (nothing special)."""
    opts = task_options(**{k: kwargs[k] for k in OPTION_NAMES if k in kwargs})
    if opts.is_default:
        return None
    return dict.fromkeys(tasks, opts)


def _external(executor):
    """The ``external`` of normalize_graph: a Future of `executor` is data on the cluster."""
    from .executor import Future

    def resolve(value):
        if value.executor is not executor:
            raise ValueError(
                f"the graph holds {value!r}, which belongs to another Executor; "
                "compute it with that Executor, or persist the collection again here"
            )
        return value.key

    return (Future,), resolve


def _prepare(executor, dsk, keys, kwargs):
    """Caller's thread: graph -> (tasks, keymap, order, normalized graph, options)."""
    executor._check_session()
    g = normalize_graph(dsk, keys, external=_external(executor))
    tasks, keymap, order = graph_tasks(g)
    return tasks, keymap, order, g, _options(tasks, kwargs)


async def _run_graph(session, tasks, outputs, order, options):
    session.update_graph(tasks, wants=outputs, order=order, options=options)
    try:
        return await session.gather(outputs)
    finally:
        session.release(outputs)


def get(executor, dsk, keys, **kwargs):
    """Run `dsk` for `keys` on the cluster; results shaped like `keys` (see Executor.get)."""
    tasks, keymap, order, g, options = _prepare(executor, dsk, keys, kwargs)
    outputs = list(dict.fromkeys(keymap[k] for k in g.keys))
    session = executor.session

    def pack(data):
        return _pack_tuples(keys, {k: data[keymap[k]] for k in g.keys})

    if executor.asynchronous:

        async def run():
            return pack(await _run_graph(session, tasks, outputs, order, options))

        return run()
    return pack(executor._sync(_run_graph, session, tasks, outputs, order, options))


def _pack_tuples(keys, results):
    """Like dask's own schedulers: a list of keys gives a tuple of results (nested too).

    >>> _pack_tuples(['a', ['b', ('c', 0)]], {'a': 1, 'b': 2, ('c', 0): 3})
    (1, (2, 3))
    """
    if isinstance(keys, list):
        return tuple(_pack_tuples(k, results) for k in keys)
    return results[keys]


def _submit(executor, dsk, keys, kwargs) -> dict:
    """Send the graph's tasks; a new Future for each occurrence of an output key."""
    from .executor import Future

    tasks, keymap, order, g, options = _prepare(executor, dsk, keys, kwargs)
    outputs = [keymap[k] for k in g.keys]
    session = executor.session
    # the wants are counted before any Future made below can be released
    session.call_soon(session.update_graph_or_fail, tasks, outputs, None, order, options)
    return {k: Future(keymap[k], executor) for k in g.keys}


class _Captured(Exception):
    pass


def _capture(collection, optimize_graph: bool):
    """``(graph, keys)`` dask would hand a scheduler to compute `collection` (finalized)."""
    import dask

    captured = {}

    def capture(dsk, keys, **kwargs):
        captured["dsk"], captured["keys"] = dsk, keys
        raise _Captured

    try:
        dask.compute(collection, scheduler=capture, optimize_graph=optimize_graph)
    except _Captured:
        pass
    if "dsk" not in captured:
        raise TypeError(f"{collection!r:.100} is not a dask collection")
    dsk, keys = captured["dsk"], captured["keys"]
    if not isinstance(dsk, Mapping) and hasattr(dsk, "__dask_graph__"):
        # current dask: the graph ends in one finalize task per collection
        [out_key] = keys
        return dsk, out_key
    # older dask: finalize on the cluster, as dask.compute would here; `keys`
    # holds one entry per collection (we passed one)
    [collection_keys] = keys
    finalize, extra = collection.__dask_postcompute__()
    out_key = f"finalize-{uuid.uuid4().hex}"
    dsk = dict(dsk)
    dsk[out_key] = (finalize, collection_keys, *extra)
    return dsk, out_key


def compute(executor, collections, optimize_graph=True, sync=False, **kwargs):
    """Futures (or values with ``sync=True``) of dask collections; see Executor.compute."""
    single = not isinstance(collections, (list, tuple))
    colls = [collections] if single else list(collections)
    futures = []
    for c in colls:
        dsk, out_key = _capture(c, optimize_graph)
        futures.append(_submit(executor, dsk, [out_key], kwargs)[out_key])
    result = futures[0] if single else futures
    if sync:
        return executor.gather(result)
    return result


def persist(executor, collections, optimize_graph=True, **kwargs):
    """Collections backed by Futures on the cluster; see Executor.persist."""
    import dask

    single = not isinstance(collections, (list, tuple))
    colls = [collections] if single else list(collections)

    def schedule(dsk, keys, **_):
        # dask.persist hands us the graph and output keys and rebuilds each
        # collection from what we return: a Future in place of every value
        futures = _submit(executor, dsk, keys, kwargs)
        flat = iter([futures[k] for k in flatten_keys(keys)])
        return _reshape(keys, flat)

    out = dask.persist(*colls, scheduler=schedule, optimize_graph=optimize_graph, traverse=False)
    return out[0] if single else list(out)


def _reshape(keys, flat):
    if isinstance(keys, list):
        return [_reshape(k, flat) for k in keys]
    return next(flat)


# --------------------------------------------------------------------------- default scheduler

_lock = threading.Lock()
_stack: list = []  # open Executors registered as dask's default, latest last
_saved: dict = {}  # the configuration before the first of them
_CONFIG = ("scheduler", "dataframe.shuffle.method")


def _dask_config():
    if importlib.util.find_spec("dask") is None:
        return None
    import dask.config

    return dask.config


def set_default(executor) -> bool:
    """Make `executor` dask's default scheduler; False when dask is not installed."""
    config = _dask_config()
    if config is None:
        return False
    with _lock:
        if not _stack:
            _saved.clear()
            _saved.update({name: config.get(name, None) for name in _CONFIG})
        _stack.append(executor)
        config.set({"scheduler": executor, "dataframe.shuffle.method": "tasks"})
    return True


def unset_default(executor) -> None:
    """Undo :func:`set_default` for `executor` (closing); no-op if it was not registered."""
    with _lock:
        if executor not in _stack:
            return
        _stack.remove(executor)
        import dask.config as config

        if config.get("scheduler", None) is not executor:
            return  # the user chose another scheduler meanwhile: leave it
        if _stack:
            config.set({"scheduler": _stack[-1], "dataframe.shuffle.method": "tasks"})
        else:
            config.set(dict(_saved))
