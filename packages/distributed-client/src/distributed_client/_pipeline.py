"""How many tasks the client keeps in flight on each worker (pipelining depth).

Each worker gets at most ``max_in_flight`` tasks at once (``2 * ncores + 1``
at first; the driver raises it for workers that answer fast or are far away,
see :func:`in_flight_target` and :class:`RoundTrip`, so that their cores
never wait for the client). Pure functions and a small estimator: no I/O.
"""

from __future__ import annotations

__all__ = [
    "PipelinePolicy",
    "RoundTrip",
    "default_max_in_flight",
    "in_flight_target",
    "MAX_IN_FLIGHT_PER_CORE",
]

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


class PipelinePolicy:
    """Per-worker pipelining decisions from the timing of compute replies (no I/O).

    The driver reports events with the loop's clock; this sets each worker's
    ``max_in_flight`` and ``ahead`` on its :class:`~._tasks.WorkerState`:

    * :meth:`on_reply`: enough requests must wait at the worker to cover the
      client's own reaction time (`pipeline_cover` seconds): many for tasks of
      a few microseconds, ``2 * ncores + 1`` for tasks that take a while
      (then queued work stays in the client, where it can still go to another
      worker); never less than the round trip needs (:func:`in_flight_target`).
    * :meth:`on_round_trip`: a reply came `elapsed` s after its request and the
      function ran `duration` s. A worker that reports durations understands
      tasks sent ahead of their inputs (``pending``); they go to it while its
      tasks are short (`ahead_max_task_time`: a compute waiting for its inputs
      holds its connection).
    * :meth:`on_identity`: the worker's ``identity`` lists its features.

    >>> from distributed_client._tasks import WorkerState
    >>> ws = WorkerState("tcp://a:1", ncores=1, max_in_flight=3)
    >>> p = PipelinePolicy()
    >>> p.on_round_trip(ws, elapsed=0.0105, duration=0.0005, now=0.0)
    >>> ws.ahead, ws.max_in_flight, p.is_capable("tcp://a:1")
    (True, 43, True)
    """

    def __init__(self, pipeline_cover: float = 0.003, ahead_max_task_time: float = 0.5):
        self.pipeline_cover = pipeline_cover
        self.ahead_max_task_time = ahead_max_task_time
        #: worker -> [time of its last compute reply, smoothed gap between replies]
        self._timing: dict[str, list] = {}
        #: worker -> its round trip and task time (sizes its pipeline)
        self.round_trips: dict[str, RoundTrip] = {}
        #: workers that understand the issue-8 compute fields (pending, keep_inputs)
        self._capable: set[str] = set()

    def is_capable(self, worker: str) -> bool:
        return worker in self._capable

    def forget(self, worker: str) -> None:
        """`worker` is gone: a worker at that address later starts afresh."""
        self.round_trips.pop(worker, None)
        self._capable.discard(worker)

    def on_reply(self, worker: str, ws, now: float) -> None:
        """A compute reply from `worker` (whose WorkerState is `ws`, or None) at `now`."""
        timing = self._timing.get(worker)
        if timing is None:
            self._timing[worker] = [now, None]
            return
        gap = now - timing[0]
        timing[0] = now
        if gap > 0.25 or ws is None or len(ws.processing) < 2:
            return  # the worker may have waited for us: not a measure of its speed
        ewma = timing[1] = gap if timing[1] is None else 0.8 * timing[1] + 0.2 * gap
        n = ws.ncores
        depth = n + int(self.pipeline_cover / max(ewma, 1e-6))
        depth = min(max(2 * n + 1, depth), 16 * n + 4)
        rt = self.round_trips.get(worker)
        if rt is not None:  # cover the round trip too (bandwidth-delay product)
            depth = max(depth, in_flight_target(n, rt.rtt, rt.task_time))
        ws.max_in_flight = depth

    def on_round_trip(self, ws, elapsed: float, duration: float, now: float) -> None:
        """A reply from ``ws.address`` after `elapsed` s; the function ran `duration` s."""
        worker = ws.address
        rt = self.round_trips.get(worker)
        if rt is None:
            rt = self.round_trips[worker] = RoundTrip()
        rt.observe(elapsed, duration, now)
        self._capable.add(worker)
        ws.ahead = rt.task_time is not None and rt.task_time < self.ahead_max_task_time
        ws.max_in_flight = max(ws.max_in_flight, in_flight_target(ws.ncores, rt.rtt, rt.task_time))

    def on_identity(self, ws, features) -> bool:
        """The worker's ``identity`` listed `features`; True if it understands ``pending``."""
        if not (isinstance(features, list) and "pending" in features):
            return False
        self._capable.add(ws.address)
        rt = self.round_trips.get(ws.address)
        ws.ahead = rt is None or (
            rt.task_time is not None and rt.task_time < self.ahead_max_task_time
        )
        return True
