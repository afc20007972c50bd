"""``rpc``: call ops on a remote Server through one connection pool.

The pool's decisions (reuse an idle connection, open a new one, wait, or
close an idle one to stay under the limit) are plain bookkeeping in
:class:`ConnectionPool`; connecting happens after the decision, outside it.
There is one mechanism: every ``rpc`` call goes through a pool.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import defaultdict, deque

from .addresses import normalize_address
from .comm import Comm, connect
from .errors import CommClosedError, CommTimeoutError, DecodeError
from .failure import Failure
from .protocol import Limits
from .security import Security
from .timeouts import Timeouts, configured

__all__ = ["ConnectionPool", "rpc"]

logger = logging.getLogger("distributed_core.rpc")


class ConnectionPool:
    """Reusable connections to many addresses, at most ``limit`` open at once.

    ``await pool.acquire(address)`` returns a connected :class:`Comm` for the
    caller's exclusive use; give it back with ``pool.release(comm)`` (or
    ``pool.discard(comm)`` if it is broken). Concurrent callers get separate
    connections; when ``limit`` connections are open, an idle one to another
    address is closed, or the caller waits for one to be released.

    ``timeouts`` (:class:`~distributed_core.timeouts.Timeouts`, default
    :func:`~distributed_core.timeouts.configured`) gives the default
    ``connect_timeout`` and the TCP keepalive / ``TCP_USER_TIMEOUT`` settings
    of every connection it opens.

    ``client`` (a client's id) is sent in the hello of every connection it
    opens, so workers know whose data a request makes (issue 10).

    .. versionchanged:: 0.2.0
       ``timeouts``; ``connect_timeout`` defaults to
       ``timeouts.connect_timeout`` (5 s) instead of 10 s.
    """

    def __init__(
        self,
        limit: int = 512,
        security: Security | None = None,
        connect_timeout: float | None = None,
        name: str | None = None,
        limits: Limits | None = None,
        *,
        timeouts: Timeouts | None = None,
        client: str | None = None,
    ):
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.limit = limit
        self.security = security
        self.timeouts = timeouts or configured()
        self.connect_timeout = (
            self.timeouts.connect_timeout if connect_timeout is None else connect_timeout
        )
        self.name = name
        #: a client's id, sent in the hello of every connection (issue 10)
        self.client = client
        self.limits = limits
        self._idle: dict[str, deque[Comm]] = defaultdict(deque)
        self._active: set[Comm] = set()
        self._connecting = 0
        self._waiters: deque[asyncio.Future] = deque()
        self._closed = False

    @property
    def open(self) -> int:
        """Connections open or being opened."""
        return sum(len(d) for d in self._idle.values()) + len(self._active) + self._connecting

    @property
    def active(self) -> int:
        return len(self._active)

    def __repr__(self) -> str:
        return f"<ConnectionPool open={self.open} active={self.active} limit={self.limit}>"

    def _take_idle(self, address: str) -> Comm | None:
        idle = self._idle.get(address)
        while idle:
            comm = idle.pop()
            if not comm.closed():
                return comm
        return None

    def _evict_one(self) -> bool:
        for idle in self._idle.values():
            if idle:
                idle.popleft().abort()
                return True
        return False

    async def acquire(self, address) -> Comm:
        """A connection to ``address`` (reused if one is idle)."""
        if self._closed:
            raise RuntimeError("ConnectionPool is closed")
        address = normalize_address(address)
        while True:
            comm = self._take_idle(address)
            if comm is not None:
                self._active.add(comm)
                return comm
            if self.open < self.limit or self._evict_one():
                break
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self._wake()  # woken, then cancelled: pass the wake-up on
                raise
            finally:
                if fut in self._waiters:
                    self._waiters.remove(fut)
        self._connecting += 1
        try:
            comm = await connect(
                address,
                timeout=self.connect_timeout,
                security=self.security,
                name=self.name,
                limits=self.limits,
                timeouts=self.timeouts,
                client=self.client,
            )
        finally:
            self._connecting -= 1
            self._wake()
        if self._closed:
            comm.abort()
            raise RuntimeError("ConnectionPool is closed")
        self._active.add(comm)
        return comm

    def release(self, comm: Comm) -> None:
        """Give a connection back for reuse."""
        self._active.discard(comm)
        if self._closed or comm.closed():
            comm.abort()
        else:
            self._idle[comm.peer_address].append(comm)
        self._wake()

    def discard(self, comm: Comm) -> None:
        """Close a connection that must not be reused."""
        self._active.discard(comm)
        comm.abort()
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def remove(self, address) -> None:
        """Close idle connections to ``address`` (e.g. after it died)."""
        for comm in self._idle.pop(normalize_address(address), ()):
            comm.abort()

    async def close(self) -> None:
        """Close every connection, idle or in use."""
        self._closed = True
        for idle in self._idle.values():
            for comm in idle:
                comm.abort()
        self._idle.clear()
        for comm in list(self._active):
            comm.abort()
        self._active.clear()
        for fut in self._waiters:
            if not fut.done():
                fut.set_exception(RuntimeError("ConnectionPool is closed"))
        self._waiters.clear()


class rpc:
    """Proxy for the ops of a remote Server: ``await rpc(addr).op(**kwargs)``.

    >>> async def main(address):
    ...     async with rpc(address) as r:
    ...         return await r.ping()

    Remote errors are re-raised as the original exception type where it can
    be rebuilt (else :class:`RemoteError`), with the remote traceback as
    ``__cause__``. ``timeout`` bounds each call (the connection it used is
    then closed). Several ``rpc`` objects can share a ``pool``.

    ``idle_timeout`` bounds how long a call's reply may go without *any*
    bytes arriving (a large reply that keeps flowing is not cut): after that
    the connection is discarded and :class:`CommTimeoutError` names the op,
    the address and the seconds. ``timeouts`` (and ``connect_timeout``)
    configure the connections of the pool this proxy creates (ignored with
    ``pool=``, which has its own); see :class:`ConnectionPool`.

    A reply holding pickles from a server running another Python
    major.minor raises :class:`PythonVersionError` here (nothing is
    unpickled); so does a call whose arguments need pickling, before it is
    sent, once that server's version is known.

    .. versionchanged:: 0.2.0
       ``idle_timeout`` and ``timeouts``; ``connect_timeout`` defaults to
       ``timeouts.connect_timeout`` (5 s) instead of 10 s.
    """

    def __init__(
        self,
        address,
        *,
        security: Security | None = None,
        timeout: float | None = None,
        pool: ConnectionPool | None = None,
        connection_limit: int = 512,
        connect_timeout: float | None = None,
        name: str | None = None,
        idle_timeout: float | None = None,
        timeouts: Timeouts | None = None,
    ):
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError(f"idle_timeout must be > 0 seconds, got {idle_timeout!r}")
        self.address = normalize_address(address)
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self._own_pool = pool is None
        self.pool = pool or ConnectionPool(
            connection_limit,
            security=security,
            connect_timeout=connect_timeout,
            name=name,
            timeouts=timeouts,
        )
        self._ops: dict = {}

    def __repr__(self) -> str:
        return f"<rpc {self.address}>"

    def __getattr__(self, op: str):
        if op.startswith("_"):
            raise AttributeError(op)
        try:
            return self._ops[op]
        except KeyError:
            pass

        call = functools.partial(self.call, op)
        self._ops[op] = call
        return call

    async def call(self, op: str, **kwargs):
        """Send ``{'op': op, **kwargs}`` and return the result (or raise)."""
        if kwargs.get("reply", True) is False:
            return await self._send_only(op, kwargs)
        msg = {"op": op, "reply": True, **kwargs}
        for attempt in (0, 1):
            comm = self.pool._take_idle(self.address)
            reused = comm is not None
            if reused:
                self.pool._active.add(comm)
            else:
                comm = await self.pool.acquire(self.address)
            try:
                if self.timeout is None:
                    await comm.write(msg)
                    response = await comm.read(idle_timeout=self.idle_timeout)
                else:
                    response = await asyncio.wait_for(
                        self._roundtrip(comm, msg, self.idle_timeout), self.timeout
                    )
            except CommTimeoutError:
                self.pool.discard(comm)
                raise CommTimeoutError(
                    f"op {op!r} to {self.address} received nothing for {self.idle_timeout}s "
                    "while waiting for its reply (idle_timeout); the connection was discarded"
                ) from None
            except DecodeError:
                # the reply could not be decoded (e.g. PythonVersionError), or
                # the request could not be encoded: the stream is in sync
                self.pool.release(comm)
                raise
            except CommClosedError:
                self.pool.discard(comm)
                if reused and attempt == 0:
                    # an idle pooled connection the server had already closed
                    continue
                raise
            except asyncio.TimeoutError:
                self.pool.discard(comm)
                raise asyncio.TimeoutError(
                    f"op {op!r} to {self.address} got no reply within {self.timeout}s"
                ) from None
            except BaseException:
                self.pool.discard(comm)
                raise
            self.pool.release(comm)
            break
        if type(response) is dict:
            status = response.get("status")
            if status == "OK":
                return response.get("result")
            if status == "error":
                if comm.pickle_refusal is not None:
                    # from another Python: its pickled exception is not loaded
                    response.pop("exception", None)
                Failure.from_reply(response).reraise()
        return response

    async def _send_only(self, op: str, kwargs: dict) -> None:
        """``reply=False``: send the request and do not wait for an answer."""
        comm = await self.pool.acquire(self.address)
        try:
            await comm.write({"op": op, **kwargs})
        except BaseException:
            self.pool.discard(comm)
            raise
        self.pool.release(comm)

    @staticmethod
    async def _roundtrip(comm, msg, idle_timeout=None):
        await comm.write(msg)
        return await comm.read(idle_timeout=idle_timeout)

    async def close_rpc(self) -> None:
        """Close this proxy's connections (the pool too, if it owns it)."""
        if self._own_pool:
            await self.pool.close()
        else:
            self.pool.remove(self.address)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close_rpc()
