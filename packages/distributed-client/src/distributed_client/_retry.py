"""``Future.retry()``: erred tasks go back to ``released`` and are needed again.

Runs on the session's loop. The reset itself is the scheduling state's
``retry`` transition (:meth:`SchedulerState.retry`): only tasks with a
definition run again (scattered data that was lost stays erred), and the walk
goes down through erred inputs, so a task that failed because an input failed
reruns that input too. What this adds is the wait for the workers' stored
copies of the old errors to be deleted first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterable
from typing import Any

__all__ = ["retry_keys"]


def _erred_closure(state: Any, keys: list) -> list:
    """The erred tasks among `keys` and their erred inputs (those a retry resets)."""
    stack = [state.tasks[k] for k in keys if k in state.tasks]
    reset = []
    seen = set()
    while stack:
        ts = stack.pop()
        if ts in seen or ts.state != "erred" or ts.spec is None:
            continue
        seen.add(ts)
        reset.append(ts)
        stack.extend(ts.dependencies)
    return reset


async def retry_keys(session: Any, keys: Iterable[Hashable]) -> list[Hashable]:
    """Reset the erred tasks among `keys` and their erred inputs; the keys reset.

    Workers store a task's error under its key, and the client deletes that
    copy; the reset waits until those deletes are done, so that no task of
    the rerun can read an old error as its input.
    """
    keys = list(keys)
    if session.closed:
        return []
    deleting = [
        session._deleting[ts.key]
        for ts in _erred_closure(session.state, keys)
        if ts.key in session._deleting
    ]
    if deleting:
        await asyncio.gather(*(asyncio.shield(d) for d in deleting))
    if session.closed:
        return []
    done = session.state.retry(keys)  # again from scratch: things may have changed meanwhile
    session._kick()
    return list(done)
