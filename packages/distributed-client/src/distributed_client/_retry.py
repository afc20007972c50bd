"""``Future.retry()``: erred tasks go back to ``released`` and are needed again.

Runs on the session's loop. Only tasks with a definition can run again
(scattered data that was lost stays erred); the walk goes down through erred
inputs, so a task that failed because an input failed reruns that input too.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

__all__ = ["retry_keys"]


def retry_keys(session: Any, keys: Iterable[Hashable]) -> list[Hashable]:
    """Reset the erred tasks among `keys` and their erred inputs; the keys reset."""
    if session.closed:
        return []
    state = session.state
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
