"""The scheduling keywords of ``Executor.submit``/``map``, checked in the caller's thread.

None of these ever reach the user's function: ``retries``, ``priority``,
``workers``, ``allow_other_workers``, ``resources`` (see
:func:`~distributed_client._options.task_options`), and for ``map``
``batch_size``, ``timeout`` and ``chunksize``.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Mapping
from itertools import islice

from ._options import TaskOptions, task_options, worker_list

__all__ = ["options_and_restrictions", "map_key_names", "batches", "check_map_keywords"]

#: tasks ``Executor.map`` prepares and sends to the loop at once by default
DEFAULT_BATCH_SIZE = 2000


def options_and_restrictions(
    *,
    retries: int | None = None,
    priority: float | None = None,
    workers: str | Iterable[str] | None = None,
    allow_other_workers: bool = False,
    resources: Mapping[str, float] | str | None = None,
) -> tuple[TaskOptions, frozenset[str] | None]:
    """``(TaskOptions, restriction)``: the options and the hard worker restriction.

    Worker addresses are normalized (``'127.0.0.1:8789'`` ->
    ``'tcp://127.0.0.1:8789'``); the restriction is None unless `workers`
    is given without ``allow_other_workers``. Raises ``ValueError`` or
    ``TypeError`` naming the bad keyword.
    """
    opts = task_options(
        retries=retries,
        priority=priority,
        workers=worker_list(workers),
        allow_other_workers=allow_other_workers,
        resources=resources,
    )
    restriction = opts.workers if opts.workers is not None and not allow_other_workers else None
    return opts, restriction


def check_map_keywords(
    batch_size: int | None, timeout: float | None, chunksize: int
) -> tuple[int, float | None]:
    """Check ``map``'s own keywords; ``(batch_size, timeout)``."""
    if batch_size is None:
        batch_size = DEFAULT_BATCH_SIZE
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r:.50}: give a whole number >= 1")
    if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
        raise ValueError(f"chunksize={chunksize!r:.50}: give a whole number >= 1")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
            raise ValueError(f"timeout={timeout!r:.50}: give seconds >= 0, or None")
    return batch_size, timeout


def map_key_names(key: str | Iterable[Hashable] | None) -> tuple[str | None, Iterator | None]:
    """``map(key=...)``: a string is a prefix of every key; an iterable names each task."""
    if key is None:
        return None, None
    if isinstance(key, str):
        return key, None
    try:
        return None, iter(key)
    except TypeError:
        raise TypeError(
            f"map(key={key!r:.100}): give a prefix string or one key per task"
        ) from None


def batches(iterables: tuple[Iterable, ...], size: int) -> Iterator[list[tuple]]:
    """``zip(*iterables)`` in lists of at most `size`, consumed lazily."""
    it = zip(*iterables)
    while True:
        batch = list(islice(it, size))
        if not batch:
            return
        yield batch
