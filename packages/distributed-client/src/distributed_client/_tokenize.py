"""Content-based keys: the same call gets the same key, so it is computed once."""

from __future__ import annotations

import hashlib
import uuid

import cloudpickle

__all__ = ["tokenize", "funcname", "unique_key"]


def tokenize(*args, **kwargs) -> str:
    """A hex digest of the arguments' cloudpickled bytes.

    Equal values give equal tokens within a process (and usually across
    processes running the same code). Raises ``TypeError`` naming the problem
    when something cannot be pickled, which also means it could not be sent.

    >>> tokenize(1, [2, 3], x="y") == tokenize(1, [2, 3], x="y")
    True
    >>> tokenize(1) == tokenize(2)
    False
    """
    try:
        data = cloudpickle.dumps((args, sorted(kwargs.items())), protocol=5)
    except Exception as e:
        raise TypeError(f"cannot pickle the task's function or arguments: {e}") from e
    return hashlib.blake2b(data, digest_size=16).hexdigest()


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
