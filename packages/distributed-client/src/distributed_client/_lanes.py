"""Pipelined ``compute`` requests to one worker.

A worker's Server answers the requests of one connection in order, so a
client can write several requests on a connection before the first reply
comes back (pipelining) and match replies to requests by position. That
saves a round trip of latency per task and the cost of taking a pooled
connection and an asyncio task per request, which is what lets thousands of
small tasks a second through.

A worker runs one request of a connection at a time, so a link keeps
``2 * ncores + 2`` connections ("lanes", chosen by the session) and sends
each request on the lane with the fewest outstanding requests: tiny tasks
overlap their handling in the worker, and a task sent ahead of its inputs
(waiting for them on the worker) holds up one lane, not a core's.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from distributed_core import CommClosedError, connect

__all__ = ["WorkerLink"]

logger = logging.getLogger("distributed_client")


class _Lane:
    __slots__ = ("link", "comm", "outbox", "pending", "wake", "tasks", "broken")

    def __init__(self, link: WorkerLink):
        self.link = link
        self.comm = None
        #: (msg, on_reply) not yet written
        self.outbox: deque = deque()
        #: on_reply callbacks of requests written (or being written), in order
        self.pending: deque = deque()
        self.wake: asyncio.Future | None = None
        self.tasks: list[asyncio.Task] = []
        self.broken = False

    def __len__(self) -> int:
        return len(self.outbox) + len(self.pending)

    def start(self) -> None:
        self.tasks.append(asyncio.ensure_future(self._run()))

    def push(self, msg: dict, on_reply: Callable) -> None:
        self.outbox.append((msg, on_reply))
        w = self.wake
        if w is not None and not w.done():
            w.set_result(None)

    async def _run(self) -> None:
        link = self.link
        try:
            try:
                self.comm = await connect(
                    link.address,
                    timeout=link.connect_timeout,
                    security=link.security,
                    name=link.name,
                    client=link.client,
                )
            except (CommClosedError, OSError) as e:
                link._failed(self, sent=False, cause=e)
                return
            link._connected()
            reader = asyncio.ensure_future(self._read())
            self.tasks.append(reader)
            loop = asyncio.get_running_loop()
            comm = self.comm
            outbox = self.outbox
            pending = self.pending
            while True:
                if not outbox:
                    self.wake = loop.create_future()
                    await self.wake
                    self.wake = None
                    continue
                msg, on_reply = outbox.popleft()
                pending.append(on_reply)  # before writing: the reply may come at once
                try:
                    await comm.write(msg)
                except (CommClosedError, OSError) as e:
                    link._failed(self, sent=True, cause=e)
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    # could not encode this message (e.g. unpicklable data): only it fails
                    pending.pop()
                    on_reply(e)
        except asyncio.CancelledError:
            pass

    async def _read(self) -> None:
        comm = self.comm
        pending = self.pending
        try:
            while True:
                try:
                    reply = await comm.read()
                except (CommClosedError, OSError) as e:
                    self.link._failed(self, sent=True, cause=e)
                    return
                if not pending:
                    logger.warning("unexpected message from %s: %r", self.link.address, reply)
                    continue
                on_reply = pending.popleft()
                on_reply(reply)
        except asyncio.CancelledError:
            pass

    def close(self) -> list:
        """Stop; return the callbacks of requests that got no reply."""
        self.broken = True
        for t in self.tasks:
            t.cancel()
        if self.comm is not None:
            self.comm.abort()
        lost = list(self.pending) + [cb for _, cb in self.outbox]
        self.pending.clear()
        self.outbox.clear()
        return lost


class WorkerLink:
    """Pipelined requests to one worker over ``nlanes`` connections.

    ``send(msg, on_reply)`` queues a request; ``on_reply(reply)`` is called
    with the reply dict, or with an exception if the request could not be
    encoded. When a connection fails, ``on_failure(link, sent, cause)`` is
    called once and the link is closed; the session then treats the worker as
    gone. ``on_connect(link)``, if given, is called once, when the first
    connection is up (the worker is reachable).
    """

    def __init__(
        self,
        address: str,
        nlanes: int,
        *,
        on_failure: Callable,
        on_connect: Callable | None = None,
        security=None,
        connect_timeout: float = 2.0,
        name: str | None = None,
        client: str | None = None,
    ):
        self.address = address
        self.security = security
        self.connect_timeout = connect_timeout
        self.name = name
        self.client = client  # sent in the hello: the worker reports results as ours
        self.on_failure = on_failure
        self.on_connect = on_connect
        self.lanes = [_Lane(self) for _ in range(max(1, nlanes))]
        self.closed = False
        for lane in self.lanes:
            lane.start()

    def __repr__(self) -> str:
        return f"<WorkerLink {self.address} lanes={len(self.lanes)} outstanding={self.outstanding}>"

    @property
    def outstanding(self) -> int:
        return sum(len(lane) for lane in self.lanes)

    def send(self, msg: dict, on_reply: Callable) -> None:
        if self.closed:
            raise CommClosedError(f"connection to worker {self.address} is closed")
        lanes = self.lanes
        best = lanes[0]
        if len(lanes) > 1:
            n = len(best)
            for lane in lanes:
                m = len(lane)
                if m < n:
                    best, n = lane, m
        best.push(msg, on_reply)

    def _connected(self) -> None:
        cb, self.on_connect = self.on_connect, None
        if cb is not None and not self.closed:
            cb(self)

    def _failed(self, lane: _Lane, sent: bool, cause: BaseException) -> None:
        if self.closed:
            return
        # blame the worker's death on its requests if any lane had one written,
        # not only the lane that noticed (e.g. a lane still connecting)
        sent = sent or any(lane.pending for lane in self.lanes)
        self.close()
        self.on_failure(self, sent, cause)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for lane in self.lanes:
            lane.close()
