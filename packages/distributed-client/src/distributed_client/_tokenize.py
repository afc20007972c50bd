"""Content-based keys: the same call gets the same key, so it is computed once."""

from __future__ import annotations

import hashlib
import uuid

import cloudpickle

__all__ = ["tokenize", "funcname", "unique_key"]


def tokenize(*args, **kwargs) -> str:
    """A hex digest naming the arguments' values.

    With dask installed, arguments other than plain Python values (numpy
    arrays, pandas objects, ...) are named by dask's ``tokenize``, which hashes
    their data without a full pickle (an 8 MB array: ~10 ms instead of ~80);
    plain values (numbers, strings, bytes and small containers of them), and
    everything when dask is missing or cannot name an object
    deterministically, by a hash of their cloudpickled bytes.

    Equal values give equal tokens within a process (and usually across
    processes running the same code). Raises ``TypeError`` naming the problem
    when something cannot be pickled, which also means it could not be sent.

    >>> tokenize(1, [2, 3], x="y") == tokenize(1, [2, 3], x="y")
    True
    >>> tokenize(1) == tokenize(2)
    False
    """
    if not (_plain(args, 3) and _plain(kwargs, 2)):
        dask_tokenize = _dask_tokenize()
        if dask_tokenize is not None:
            try:
                return dask_tokenize(args, kwargs, ensure_deterministic=True)
            except Exception:  # not deterministic (or a bug): the fallback decides
                pass
    return _pickle_token(args, kwargs)


def _pickle_token(args, kwargs) -> str:
    try:
        data = cloudpickle.dumps((args, sorted(kwargs.items())), protocol=5)
    except Exception as e:
        raise TypeError(f"cannot pickle the task's function or arguments: {e}") from e
    return hashlib.blake2b(data, digest_size=16).hexdigest()


_ATOMIC = frozenset({int, float, str, bytes, bool, type(None), complex})
_dask: list = []  # [dask's tokenize or None], looked up once


def _plain(obj, depth: int) -> bool:
    """Plain Python values (and small containers of them): cheapest to pickle."""
    t = type(obj)
    if t in _ATOMIC:
        return True
    if depth == 0:
        return False
    if t is tuple or t is list:
        return len(obj) <= 64 and all(_plain(x, depth - 1) for x in obj)
    if t is dict:
        return len(obj) <= 64 and all(
            type(k) is str and _plain(v, depth - 1) for k, v in obj.items()
        )
    return False


def _dask_tokenize():
    if not _dask:
        try:
            from dask.base import tokenize as dask_tokenize
        except ImportError:
            dask_tokenize = None
        _dask.append(dask_tokenize)
    return _dask[0]


def funcname(func) -> str:
    """A short readable name for a callable, used as the prefix of its keys.

    >>> funcname(len)
    'len'
    >>> funcname(lambda x: x)
    'lambda'
    """
    while hasattr(func, "func"):  # functools.partial
        func = func.func
    name = getattr(func, "__name__", None) or type(func).__name__
    if name == "<lambda>":
        return "lambda"
    return name.strip("<>").replace(" ", "_")


def unique_key(prefix: str) -> str:
    """``prefix-<random hex>``, for results that must never be shared."""
    return f"{prefix}-{uuid.uuid4().hex}"
