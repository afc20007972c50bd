"""Abstract resources a worker declares (``dworker --resources "GPU=2,MEM=8e9"``).

One parser shared by the worker (its ``--resources`` flag, ``Worker(resources=)``
and the ``worker.resources`` configuration key) and the client (a task's
``resources=`` option), so both read the same syntax and give the same errors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["parse_resources"]


def parse_resources(resources: Any) -> dict[str, float] | None:
    """``{"GPU": 1}`` or ``"GPU=1,MEM=8e9"`` -> ``{"GPU": 1.0, ...}``; checks every amount.

    Names are non-empty strings; amounts are finite numbers >= 0. None (or
    an empty string) means no resources and gives None.

    >>> parse_resources("GPU=2, MEM=8e9")
    {'GPU': 2.0, 'MEM': 8000000000.0}
    >>> parse_resources(None) is None
    True
    >>> parse_resources("GPU")
    Traceback (most recent call last):
    ...
    ValueError: resources 'GPU': write NAME=AMOUNT pairs separated by commas, e.g. "GPU=2,MEM=8e9"
    """
    if resources is None:
        return None
    if isinstance(resources, str):
        if not resources.strip():
            return None
        items = {}
        for part in resources.split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, amount = part.partition("=")
            if not sep or not name.strip():
                raise ValueError(
                    f"resources {resources!r}: write NAME=AMOUNT pairs separated by commas, "
                    f'e.g. "GPU=2,MEM=8e9"'
                )
            items[name.strip()] = amount.strip()
        resources = items
    if not isinstance(resources, Mapping):
        raise TypeError(f"resources= takes a dict like {{'GPU': 1}}, not {resources!r:.100}")
    out = {}
    for name, amount in resources.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"resource names are non-empty strings, got {name!r:.100}")
        if isinstance(amount, bool):
            raise ValueError(f"resource {name}={amount!r} is not a number")
        try:
            value = float(amount)
        except (TypeError, ValueError):
            raise ValueError(f"resource {name}={amount!r:.100} is not a number") from None
        if not value >= 0 or math.isinf(value):
            raise ValueError(f"resource {name}={amount!r:.100} must be a finite number >= 0")
        out[name] = value
    return out
