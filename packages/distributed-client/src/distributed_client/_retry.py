"""``Future.retry()``: erred tasks go back to ``released`` and are needed again.

Runs on the session's loop. Only tasks with a definition can run again
(scattered data that was lost stays erred); the walk goes down through erred
inputs, so a task that failed because an input failed reruns that input too.
A scheduling state with its own ``retry(keys)`` (returning the keys reset)
is used instead of the reset here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterable
from typing import Any

__all__ = ["retry_keys"]


def _erred_closure(state: Any, keys: list) -> tuple[list, list]:
    roots = [state.tasks[k] for k in keys if k in state.tasks]
    stack = [ts for ts in roots if ts.state == "erred"]
    reset = []
    seen = set()
    while stack:
        ts = stack.pop()
        if ts in seen or ts.state != "erred" or ts.spec is None:
            continue
        seen.add(ts)
        reset.append(ts)
        stack.extend(ts.dependencies)
    return roots, reset


async def retry_keys(session: Any, keys: Iterable[Hashable]) -> list[Hashable]:
    """Reset the erred tasks among `keys` and their erred inputs; the keys reset.

    Workers store a task's error under its key, and the client deletes that
    copy; the reset waits until those deletes are done, so that no task of
    the rerun can read an old error as its input.
    """
    keys = list(keys)
    if session.closed:
        return []
    _, reset = _erred_closure(session.state, keys)
    deleting = [session._deleting[ts.key] for ts in reset if ts.key in session._deleting]
    if deleting:
        await asyncio.gather(*(asyncio.shield(d) for d in deleting))
    if session.closed:
        return []
    state = session.state
    own = getattr(state, "retry", None)
    if own is not None:  # a state machine with its own retry transition
        done = own(keys)
        session._kick()
        return list(done or ())
    roots, reset = _erred_closure(state, keys)  # again: things may have changed meanwhile
    for ts in reset:
        ts.state = "released"
        ts.exception = None
        ts.killed = []
        ts.suspicious = 0
        ts.missing_count = 0
        ts.avoid.clear()
        ts.stalled_since = None
    for ts in reset:
        if ts.wants > 0 or ts in roots:
            state.want([ts.key])  # _need walks down to the released inputs
            state.release([ts.key])
    session._kick()
    return [ts.key for ts in reset]
