"""Task states and the one table of their allowed transitions.

Every change of a task's :class:`TaskStatus` goes through :func:`transition`
with a named event; the pair ``(state, event)`` must be in
:data:`TRANSITIONS` (as in h11's state machine), otherwise
:class:`InvalidTransition` is raised: an internal error, never a silent
corruption of the client's bookkeeping. ::

    released --wait--> waiting --ready--> queued --start--> processing --finish--> memory
        ^  \\--ready-----------------------^  ^                  |                    |
        |                                     +---input-lost------+                    |
        +--------- reschedule / retry / release -----------------+                    |
        +--------------------------- lose / release -----------------------------------+
    any unfinished task --fail--> erred --retry--> released;   any --forget--> forgotten

``waiting --start-ahead--> processing``: sent to the worker that runs its last
inputs before they end (ahead dispatch).
"""

from __future__ import annotations

from enum import Enum

__all__ = ["TaskStatus", "TRANSITIONS", "InvalidTransition", "transition"]


class TaskStatus(str, Enum):
    """The state of one task in the client (compares equal to its name as a string)."""

    #: known, not needed now (or its data was deleted); its definition is kept
    released = "released"
    #: needed; some inputs are not in memory yet
    waiting = "waiting"
    #: every input in memory: waits for a worker (placed on one, not sent yet)
    queued = "queued"
    #: sent to a worker, no answer yet
    processing = "processing"
    #: the result is held by at least one worker
    memory = "memory"
    #: failed (the exception is on the task)
    erred = "erred"
    #: dropped from the client's bookkeeping
    forgotten = "forgotten"

    def __str__(self) -> str:
        return self.value


_R, _W, _Q, _P, _M, _E, _F = (
    TaskStatus.released,
    TaskStatus.waiting,
    TaskStatus.queued,
    TaskStatus.processing,
    TaskStatus.memory,
    TaskStatus.erred,
    TaskStatus.forgotten,
)

#: ``(state, event) -> new state``: every allowed transition, nothing else
TRANSITIONS: dict[tuple[TaskStatus, str], TaskStatus] = {
    # needed again (or for the first time)
    (_R, "wait"): _W,  # some inputs not in memory
    (_R, "ready"): _Q,  # every input in memory
    (_W, "ready"): _Q,  # its last input arrived
    # running
    (_Q, "start"): _P,  # sent to a worker
    (_W, "start-ahead"): _P,  # sent ahead of inputs running on the same worker
    (_W, "finish"): _M,  # a result arrived (also for a task sent ahead, or stolen)
    (_Q, "finish"): _M,
    (_P, "finish"): _M,
    (_P, "reschedule"): _R,  # its worker died, or it could not fetch its inputs
    (_P, "retry"): _R,  # it raised and has retries left
    (_Q, "input-lost"): _R,  # an input's last copy was lost before it was sent
    # data put on the cluster from outside (scatter, another client)
    (_R, "data"): _M,
    (_W, "data"): _M,
    (_Q, "data"): _M,
    (_P, "data"): _M,
    (_E, "data"): _M,
    # failing: the task raised, was cancelled, lost, or its input failed
    (_R, "fail"): _E,
    (_W, "fail"): _E,
    (_Q, "fail"): _E,
    (_P, "fail"): _E,
    (_M, "fail"): _E,  # data whose every holder is gone and that has no definition
    (_E, "fail"): _E,  # failed again (a new reason replaces the old one)
    (_E, "retry"): _R,  # retried by the user
    # not needed any more
    (_M, "lose"): _R,  # its last copy was lost
    (_M, "release"): _R,
    (_W, "release"): _R,
    (_Q, "release"): _R,
    (_P, "release"): _R,  # a late result is deleted
    # nothing refers to it
    (_R, "forget"): _F,
    (_W, "forget"): _F,
    (_Q, "forget"): _F,
    (_P, "forget"): _F,
    (_M, "forget"): _F,
    (_E, "forget"): _F,
}


class InvalidTransition(RuntimeError):
    """Internal error: a task was asked to change state in a way the table does not allow.

    This is a bug in the client's scheduling state; please report it with the
    message (task key, state and event).
    """

    def __init__(self, key, state, event: str):
        super().__init__(key, state, event)
        self.key = key
        self.state = state
        self.event = event

    def __str__(self) -> str:
        allowed = sorted(e for (s, e) in TRANSITIONS if s == self.state)
        return (
            f"internal error in the client's scheduling state: task {self.key!r} is "
            f"{self.state!s} and cannot take event {self.event!r} (allowed: "
            f"{', '.join(allowed) or 'none'}); please report this as a bug"
        )


def transition(ts, event: str) -> TaskStatus:
    """Move `ts` (anything with ``key`` and ``state``) along `event`; returns the new state."""
    try:
        new = TRANSITIONS[ts.state, event]
    except KeyError:
        raise InvalidTransition(ts.key, ts.state, event) from None
    ts.state = new
    return new
