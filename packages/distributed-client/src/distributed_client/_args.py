"""Find remote references (RemoteData, Futures) in call arguments and swap in their keys."""

from __future__ import annotations

import pickle
import sys
import threading
from collections import OrderedDict

import cloudpickle

__all__ = ["replace_remote", "PickledFunction", "prepickle", "by_value_modules"]


def replace_remote(obj, found: dict, kinds: tuple):
    """Return `obj` with every instance of `kinds` replaced by its ``.key``.

    Looks at the top level and inside lists, tuples, sets and dict values (the
    places a worker substitutes data for keys). `found` collects
    ``{key: reference}``.

    >>> class R:
    ...     def __init__(self, key): self.key = key
    >>> found = {}
    >>> replace_remote([1, (R('a'),), {'k': R('b')}], found, (R,))
    [1, ('a',), {'k': 'b'}]
    >>> sorted(found)
    ['a', 'b']
    """
    typ = type(obj)
    if isinstance(obj, kinds):
        found[obj.key] = obj
        return obj.key
    if typ is list or typ is tuple:
        new = [replace_remote(o, found, kinds) for o in obj]
        if all(a is b for a, b in zip(new, obj)):
            return obj
        return typ(new)
    if typ is dict:
        new = {k: replace_remote(v, found, kinds) for k, v in obj.items()}
        if all(new[k] is v for k, v in obj.items()):
            return obj
        return new
    return obj


class PickledFunction:
    """A function pickled once, sent many times.

    Pickles as ``pickle.loads(blob)``, so each compute message carries the
    ready-made bytes instead of pickling the function again, and the worker
    needs nothing of this package to rebuild it.
    """

    __slots__ = ("function", "blob")

    def __init__(self, function, blob: bytes):
        self.function = function
        self.blob = blob

    def __reduce__(self):
        return (pickle.loads, (self.blob,))

    def __call__(self, *args, **kwargs):  # so it can run locally too
        return self.function(*args, **kwargs)


_cache: OrderedDict = OrderedDict()
_cache_lock = threading.Lock()
_CACHE_SIZE = 100
_cache_registry: set = set()  # cloudpickle's by-value modules when the cache was filled


def by_value_modules() -> tuple:
    """Names of the modules registered with ``cloudpickle.register_pickle_by_value``.

    Part of pure keys: how a function or argument is pickled (by reference or
    by value) decides whether a worker can load it, so registering a module
    after a failure must give new keys, not the failed results.

    >>> by_value_modules() == tuple(sorted(cloudpickle.list_registry_pickle_by_value()))
    True
    """
    return tuple(sorted(cloudpickle.list_registry_pickle_by_value()))


def prepickle(function):
    """Pickle `function` now: a clear ``TypeError`` here rather than a failed send later.

    The last 100 functions are remembered (by identity, like dask.distributed's
    ``dumps_function``), so a function submitted many times is pickled once.
    Globals a function uses are captured the first time it is pickled. The
    cache is emptied whenever the set of modules registered with
    ``cloudpickle.register_pickle_by_value`` changes, so registering one
    takes effect at once, even for a function that was pickled before.

    .. versionchanged:: 0.2.0
       Registering a module by value empties the cache.
    """
    global _cache_registry
    if isinstance(function, PickledFunction):
        return function
    registry = cloudpickle.list_registry_pickle_by_value()
    if registry != _cache_registry:
        with _cache_lock:
            _cache.clear()
            _cache_registry = registry
    try:
        with _cache_lock:
            cached = _cache.get(function)
            if cached is not None:
                _cache.move_to_end(function)
                return cached
    except TypeError:  # unhashable callable
        pass
    if not callable(function):
        raise TypeError(
            f"expected a function (callable), got {type(function).__name__}: {function!r:.100}"
        )
    _by_value_if_spawned(function)
    try:
        blob = cloudpickle.dumps(function, protocol=5)
    except Exception as e:
        raise TypeError(
            f"cannot pickle function {getattr(function, '__name__', function)!r}, so it cannot be "
            f"sent to the workers: {type(e).__name__}: {e}"
        ) from e
    pf = PickledFunction(function, blob)
    try:
        with _cache_lock:
            _cache[function] = pf
            if len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
    except TypeError:
        pass
    return pf


def _by_value_if_spawned(function) -> None:
    """Functions of a script run by multiprocessing (``__mp_main__``) go by value.

    cloudpickle ships ``__main__`` functions by value, but in a child started
    with the ``spawn`` method the script is ``__mp_main__``, which workers
    cannot import.
    """
    if getattr(function, "__module__", None) == "__mp_main__":
        module = sys.modules.get("__mp_main__")
        if module is not None:
            try:
                cloudpickle.register_pickle_by_value(module)
            except (ValueError, AttributeError):  # old cloudpickle, or not registrable
                pass
