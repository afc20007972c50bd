"""Per-task options (``retries``, ``priority``, ``workers``, ``resources``...): parsed once.

``submit``/``map``/``compute``/``persist``/``get`` take these keywords and
never pass them to the user's function. :func:`task_options` checks them in
the caller's thread (a clear error names the bad one) and returns a
:class:`TaskOptions`, which the scheduling state reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from distributed_core import normalize_address
from distributed_core.resources import parse_resources as _parse_resources

__all__ = ["TaskOptions", "DEFAULT_OPTIONS", "task_options", "parse_resources", "worker_list"]


@dataclass(frozen=True)
class TaskOptions:
    """How one task is scheduled; the default instance means "nothing special".

    * ``retries``: how often to run the task again after it raised (0: never).
    * ``priority``: higher runs first among ready tasks (as in dask); default 0.
    * ``workers``: addresses the task may run on (None: any).
    * ``allow_other_workers``: ``workers`` is a preference, not a restriction.
    * ``resources``: ``{"GPU": 1}``; the task runs only on a worker that
      declared at least that much of each and has it free.
    """

    retries: int = 0
    priority: float = 0
    workers: frozenset[str] | None = None
    allow_other_workers: bool = False
    resources: Mapping[str, float] | None = None

    @property
    def is_default(self) -> bool:
        return self is DEFAULT_OPTIONS or self == DEFAULT_OPTIONS


DEFAULT_OPTIONS = TaskOptions()


def worker_list(workers) -> list[str] | None:
    """``workers=`` as a list of normalized addresses (None stays None); clear errors.

    >>> worker_list("127.0.0.1:8789")
    ['tcp://127.0.0.1:8789']
    """
    if workers is None:
        return None
    if isinstance(workers, str):
        workers = [workers]
    try:
        items = list(workers)
    except TypeError:
        raise TypeError(
            f"workers= takes an address or a list of addresses, not {workers!r:.100}"
        ) from None
    bad = [w for w in items if not isinstance(w, str)]
    if bad:
        raise TypeError(f"workers= takes addresses as strings, got {bad[0]!r:.100}")
    return [normalize_address(w) for w in items]


def _norm_workers(workers) -> frozenset[str] | None:
    out = worker_list(workers)
    if out is None:
        return None
    if not out:
        raise ValueError("workers= is empty: give at least one worker address, or None for any")
    return frozenset(out)


def parse_resources(resources) -> dict[str, float] | None:
    """``{"GPU": 1}`` or ``"GPU=1,MEM=8e9"`` -> ``{"GPU": 1.0, ...}``; checks every amount.

    The same parser as the workers' ``--resources``
    (:func:`distributed_core.parse_resources`).

    >>> parse_resources("GPU=2, MEM=8e9")
    {'GPU': 2.0, 'MEM': 8000000000.0}
    >>> parse_resources(None) is None
    True
    """
    return _parse_resources(resources)


def task_options(
    *,
    retries: int | None = None,
    priority: float | None = None,
    workers: str | Iterable[str] | None = None,
    allow_other_workers: bool = False,
    resources: Mapping[str, float] | str | None = None,
) -> TaskOptions:
    """Check the per-task keywords and return their :class:`TaskOptions`.

    >>> task_options(retries=2, workers="tcp://10.0.0.5:8789").retries
    2
    >>> task_options() is DEFAULT_OPTIONS
    True
    >>> task_options(retries=-1)
    Traceback (most recent call last):
    ...
    ValueError: retries=-1: give a whole number >= 0 (how often to re-run a task that raised)
    """
    if retries is None:
        retries = 0
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(
            f"retries={retries!r:.50}: give a whole number >= 0 "
            "(how often to re-run a task that raised)"
        )
    if priority is None:
        priority = 0
    if isinstance(priority, bool) or not isinstance(priority, (int, float)):
        raise TypeError(f"priority={priority!r:.50}: give a number (higher runs first)")
    if not isinstance(allow_other_workers, bool):
        raise TypeError(f"allow_other_workers={allow_other_workers!r:.50}: give True or False")
    w = _norm_workers(workers)
    if allow_other_workers and w is None:
        raise ValueError("allow_other_workers=True needs workers=[...] to prefer")
    res = parse_resources(resources) or None
    if not retries and not priority and w is None and not allow_other_workers and res is None:
        return DEFAULT_OPTIONS
    return TaskOptions(retries, priority, w, allow_other_workers, res)
