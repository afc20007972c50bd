"""How many tasks the client keeps in flight on each worker (pipelining depth).

Each worker gets at most ``max_in_flight`` tasks at once (``2 * ncores + 1``
at first; the driver raises it for workers that answer fast or are far away,
see :func:`in_flight_target` and :class:`RoundTrip`, so that their cores
never wait for the client). Pure functions and a small estimator: no I/O.
"""

from __future__ import annotations

__all__ = ["RoundTrip", "default_max_in_flight", "in_flight_target", "MAX_IN_FLIGHT_PER_CORE"]

#: the most tasks kept in flight per core of one worker, however far away it
#: is and however short its tasks (bounds what a dead worker takes with it and
#: what an idle worker can no longer steal)
MAX_IN_FLIGHT_PER_CORE = 128
#: task times below this (seconds) count as this when sizing the pipeline
MIN_TASK_TIME = 50e-6


def default_max_in_flight(ncores: int) -> int:
    """How many tasks the client keeps in flight on a new worker with `ncores`.

    ``2 * ncores + 1``: one running per core, one waiting per core for when it
    ends, one spare. The session raises it for workers that answer quickly
    (see ``Session._observe_reply``), so that tiny tasks never leave a core
    waiting for the client; queued work otherwise stays in the client, where
    it can still move to another worker.
    """
    return 2 * ncores + 1


def in_flight_target(ncores: int, rtt: float | None, task_time: float | None) -> int:
    """Tasks to keep in flight on a worker: its cores' share of the bandwidth-delay product.

    While a reply travels back to the client and the next request travels to
    the worker (`rtt` seconds, measured without the worker's compute time),
    each core must still have work: ``rtt / task_time`` more tasks per core,
    twice that for headroom (the worker's own per-task overhead and jitter
    are not in `task_time`), plus one running per core and ``ncores + 1``
    spare. Never below
    :func:`default_max_in_flight`, never above ``MAX_IN_FLIGHT_PER_CORE``
    per core (plus 4). Unknown `rtt` or `task_time` give the default.

    >>> in_flight_target(1, rtt=0.010, task_time=0.001)  # 10 ms away, 1 ms tasks
    23
    >>> in_flight_target(2, rtt=0.0002, task_time=0.05)  # near, long tasks
    5
    """
    floor = default_max_in_flight(ncores)
    if rtt is None or task_time is None:
        return floor
    task_time = max(task_time, MIN_TASK_TIME)
    target = ncores * (1 + 2 * max(rtt, 0.0) / task_time) + ncores + 1
    return int(min(max(floor, target), MAX_IN_FLIGHT_PER_CORE * ncores + 4))


class RoundTrip:
    """Round trip and task time of one worker, from the client's compute replies.

    ``observe(elapsed, duration, now)``: a reply came `elapsed` seconds after
    its request was written; the worker says the function ran `duration`
    seconds. ``elapsed - duration`` is the round trip plus any time the
    request queued at the worker; the smallest of the current and the previous
    `window` seconds is the estimate (queueing only adds, and the window lets
    a route that became slower be noticed). The task time is a moving average
    of `duration`.

    >>> rt = RoundTrip()
    >>> for t in range(5):
    ...     rt.observe(elapsed=0.011 + 0.001 * t, duration=0.001, now=t)
    >>> round(rt.rtt, 4), round(rt.task_time, 4)
    (0.01, 0.001)
    """

    __slots__ = ("window", "rtt", "task_time", "_cur", "_prev", "_start")

    def __init__(self, window: float = 10.0):
        self.window = window
        self.rtt: float | None = None
        self.task_time: float | None = None
        self._cur: float | None = None
        self._prev: float | None = None
        self._start: float | None = None

    def observe(self, elapsed: float, duration: float, now: float) -> None:
        duration = max(0.0, duration)
        sample = max(0.0, elapsed - duration)
        if self._start is None or now - self._start > self.window:
            self._prev, self._cur, self._start = self._cur, None, now
        if self._cur is None or sample < self._cur:
            self._cur = sample
        self.rtt = self._cur if self._prev is None else min(self._cur, self._prev)
        tt = self.task_time
        self.task_time = duration if tt is None else 0.9 * tt + 0.1 * duration
