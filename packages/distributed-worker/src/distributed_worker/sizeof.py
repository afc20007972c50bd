"""How many bytes a value holds: ``dask.sizeof`` when dask is importable, else
an equivalent estimate.

The sizes drive spilling, pausing, the reports to the Center and the clients'
locality decisions, so they must count what a value *holds*: a list of numpy
arrays counts its arrays, not a few pointers.
"""

from __future__ import annotations

import random
import sys
from typing import Any

__all__ = ["sizeof", "fallback_sizeof"]

#: containers longer than this are measured on a sample of this many items
SAMPLE = 10
_SAMPLE_THRESHOLD = 1000
_MAX_DEPTH = 8


def fallback_sizeof(value: Any, _depth: int = 0) -> int:
    """Estimate of the bytes `value` holds, without dask.

    bytes-likes count their length; numpy arrays ``nbytes`` (a view counts
    its own extent); lists, tuples, sets and dicts their own size plus their
    items' (a sample of `SAMPLE` items, extrapolated, when they have more than
    1000); pandas objects ``memory_usage(deep=True)``; anything else
    ``sys.getsizeof``. Never raises.

    >>> from distributed_worker.sizeof import fallback_sizeof
    >>> fallback_sizeof(b"x" * 1000)
    1000
    >>> fallback_sizeof([b"x" * 1000] * 3) > 3000
    True
    """
    try:
        return _sizeof(value, _depth)
    except Exception:  # a broken __sizeof__ or nbytes must not break the store
        return 0


def _sizeof(value: Any, depth: int) -> int:
    typ = type(value)
    if typ is bytes or typ is bytearray:
        return len(value)
    if typ is memoryview:
        return value.nbytes
    if typ in (int, float, bool, type(None), complex):
        return sys.getsizeof(value)
    if typ is str:
        return sys.getsizeof(value)
    module = typ.__module__
    if module.startswith("numpy"):
        nbytes = getattr(value, "nbytes", None)
        if isinstance(nbytes, int):
            dtype = getattr(value, "dtype", None)
            if dtype is None or not dtype.hasobject or depth >= _MAX_DEPTH:
                return nbytes
            items = _sample(value.ravel().tolist())
            inner = sum(_sizeof(x, depth + 1) for x in items)
            return nbytes + (inner * value.size // len(items) if items else 0)
    if module.startswith("pandas"):
        usage = getattr(value, "memory_usage", None)
        if usage is not None:
            total = usage(deep=True)
            return int(getattr(total, "sum", lambda: total)())
    if depth >= _MAX_DEPTH:
        return sys.getsizeof(value)
    if typ in (list, tuple, set, frozenset):
        own = sys.getsizeof(value)
        n = len(value)
        if n == 0:
            return own
        items = _sample(list(value) if typ in (set, frozenset) else value)
        return own + sum(_sizeof(x, depth + 1) for x in items) * n // len(items)
    if typ is dict:
        own = sys.getsizeof(value)
        n = len(value)
        if n == 0:
            return own
        items = _sample(list(value.items()))
        inner = sum(_sizeof(k, depth + 1) + _sizeof(v, depth + 1) for k, v in items)
        return own + inner * n // len(items)
    return sys.getsizeof(value)


def _sample(seq):
    if len(seq) <= _SAMPLE_THRESHOLD:
        return seq
    rng = random.Random(len(seq))  # reproducible per size
    return [seq[i] for i in rng.sample(range(len(seq)), SAMPLE)]


def _dask_sizeof():
    try:
        from dask.sizeof import sizeof as dask_sizeof
    except Exception:  # not installed, or broken: the fallback does the same job
        return None

    def measured(value: Any) -> int:
        try:
            n = dask_sizeof(value)
            return int(n) if n is not None else 0
        except Exception:
            return fallback_sizeof(value)

    return measured


#: the size function the store uses
sizeof = _dask_sizeof() or fallback_sizeof
