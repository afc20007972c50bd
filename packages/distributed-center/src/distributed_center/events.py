"""What the dashboard shows: bounded ring buffers of events, and counters.

Pure and synchronous. Workers send ``task_events`` on their report streams
(when the center's ``register`` reply announced ``task_events``; see
``distributed_worker.stream``); each event is one finished task::

    [key, start, stop, thread, status, nbytes]

or, for a peer transfer, ``['transfer', peer, nkeys, nbytes, start, stop]``
(times are the worker's ``time.time()``). The center keeps:

* the last ``task_events`` tasks (default 100,000; a :class:`TaskEvent` is a
  tuple of about 350 bytes with its strings (80-character keys; 480 bytes of
  RSS in a real center), so 35-48 MB when full:
  measured in ``tests/test_events.py``);
* the last ``cluster_events`` cluster events (worker joined, left, dropped,
  task errors with the key);
* counters (tasks completed/erred, transfers and bytes transferred), and one
  sample per second of them for the last ``history`` seconds (throughput
  charts).

Nothing grows without bound: every buffer is a ``deque`` with a ``maxlen``.
A cursor (a sequence number) lets a poller ask for "everything since".
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["EventLog", "TaskEvent", "key_prefix"]


class TaskEvent(NamedTuple):
    """One finished task, as kept by the center."""

    seq: int
    worker: str
    thread: str
    prefix: str
    key: str
    start: float
    stop: float
    status: str  # "OK" or "error"
    nbytes: int


def key_prefix(key: Any) -> str:
    """The name a key's colour comes from: ``'inc-3'`` -> ``'inc'``,
    ``('sum', 4)`` -> ``'sum'``, ``'x'`` -> ``'x'``.

    >>> from distributed_center.events import key_prefix
    >>> key_prefix("inc-1f2e"), key_prefix(("sum", 4)), key_prefix(7)
    ('inc', 'sum', '7')
    """
    if isinstance(key, (tuple, list)) and key:
        key = key[0]
    text = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
    for sep in ("-", "_", "(", "["):
        head = text.split(sep, 1)[0]
        if head and head != text:
            text = head
    return text[:40]


def _str(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text[:limit]


class EventLog:
    """Ring buffers and counters fed by the center (see the module docstring)."""

    def __init__(
        self,
        task_events: int = 100_000,
        cluster_events: int = 1000,
        history: int = 600,
        clock: Callable[[], float] = time.time,
    ):
        self.tasks: deque[TaskEvent] = deque(maxlen=task_events)
        self.cluster: deque[dict] = deque(maxlen=cluster_events)
        self.history: deque[dict] = deque(maxlen=history)
        self.clock = clock
        self.seq = 0
        self.tasks_completed = 0
        self.tasks_erred = 0
        self.transfers = 0
        self.transfer_bytes = 0
        self.bad_events = 0
        self._last_sample: dict | None = None

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    # ------------------------------------------------------------- recording

    def add_task_events(self, worker: str, events: Any) -> None:
        """Record a worker's ``task_events``; malformed entries are counted and skipped."""
        if not isinstance(events, (list, tuple)):
            raise TypeError(f"task_events: events must be a list, got {type(events).__name__}")
        for ev in events:
            try:
                if ev[0] == "transfer":
                    _, _peer, _nkeys, nbytes, start, stop = ev
                    self.transfers += 1
                    self.transfer_bytes += int(nbytes)
                    continue
                key, start, stop, thread, status, nbytes = ev
                start, stop = float(start), float(stop)
                event = TaskEvent(
                    self._next(), worker, _str(thread, 40), key_prefix(key), _str(key),
                    start, stop, "error" if status == "error" else "OK", int(nbytes or 0),
                )  # fmt: skip
            except (TypeError, ValueError, IndexError):
                self.bad_events += 1
                continue
            self.tasks.append(event)
            if event.status == "error":
                self.tasks_erred += 1
                self.add("task-erred", worker, f"task {event.key} raised an error", key=event.key)
            else:
                self.tasks_completed += 1

    def add(self, kind: str, worker: str | None, detail: str, **extra) -> dict:
        """Record a cluster event (``worker-joined``, ``worker-left``, ...)."""
        event = {
            "seq": self._next(),
            "time": self.clock(),
            "kind": kind,
            "worker": worker,
            "detail": detail,
            **extra,
        }
        self.cluster.append(event)
        return event

    def sample(self, **gauges) -> None:
        """Append one sample of the counters (and `gauges`: memory, workers...).

        Called about once a second; rates are computed by the reader from
        consecutive samples.
        """
        self.history.append(
            {
                "time": self.clock(),
                "tasks_completed": self.tasks_completed,
                "tasks_erred": self.tasks_erred,
                "transfer_bytes": self.transfer_bytes,
                **gauges,
            }
        )

    # --------------------------------------------------------------- reading

    def tasks_since(self, cursor: int = 0, limit: int = 5000) -> tuple[list[TaskEvent], int]:
        """Task events with ``seq > cursor`` (the newest `limit`), and the new cursor."""
        out: list[TaskEvent] = []
        for ev in reversed(self.tasks):
            if ev.seq <= cursor or len(out) >= limit:
                break
            out.append(ev)
        out.reverse()
        return out, self.seq

    def cluster_since(self, cursor: int = 0, limit: int = 200) -> list[dict]:
        out = [e for e in reversed(self.cluster) if e["seq"] > cursor][:limit]
        out.reverse()
        return out

    def rates(self) -> list[dict]:
        """Per-second rates between consecutive samples (tasks/s, bytes/s, memory)."""
        out = []
        prev = None
        for s in self.history:
            if prev is not None:
                dt = s["time"] - prev["time"]
                if dt > 0:
                    out.append(
                        {
                            "time": s["time"],
                            "tasks_per_s": (s["tasks_completed"] - prev["tasks_completed"]) / dt,
                            "bytes_per_s": (s["transfer_bytes"] - prev["transfer_bytes"]) / dt,
                            "memory": s.get("memory", 0),
                        }
                    )
            prev = s
        return out
