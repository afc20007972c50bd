"""Replace key references in a compute's arguments with the data they name.

Pure functions, no I/O. Only keys listed in ``needed`` are replaced, wherever
they occur at the top level of ``args``/``kwargs`` or nested inside lists,
tuples and dict values. A tuple is first checked as a key (dask keys are often
tuples), and only searched inside when it is not one. Leaves are compared
only when they are of a key type (str, bytes, int): ``True`` or ``1.0`` in the
arguments is never mistaken for the key ``1``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["substitute"]

_LEAF_KEY_TYPES = frozenset({str, bytes, int})


def substitute(obj: Any, data: Mapping) -> Any:
    """Return `obj` with every item that is a key of `data` replaced by its value.

    `data` holds exactly the needed keys. Containers without any replacement
    are returned as they are (no copy).

    >>> substitute(("x", [1, "y"], {"k": "x"}), {"x": 10, "y": 20})
    (10, [1, 20], {'k': 10})
    """
    if not data:
        return obj
    return _sub(obj, data)


def _sub(obj: Any, data: Mapping) -> Any:
    typ = type(obj)
    if typ is tuple or typ is list:
        if typ is tuple:
            try:
                if obj in data:
                    return data[obj]
            except TypeError:  # a tuple holding something unhashable
                pass
        items = [_sub(item, data) for item in obj]
        if all(new is old for new, old in zip(items, obj)):
            return obj
        return typ(items)
    if typ is dict:
        values = {k: _sub(v, data) for k, v in obj.items()}
        if all(values[k] is v for k, v in obj.items()):
            return obj
        return values
    if typ in _LEAF_KEY_TYPES and obj in data:
        return data[obj]
    return obj
