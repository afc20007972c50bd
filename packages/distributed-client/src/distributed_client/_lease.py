"""A session's lease on the center: its data leaves with it (issue 10).

Every connection a session opens to a worker names the session's id in its
hello (``ConnectionPool(client=...)``), so the worker reports each result and
each scattered key to the center as this client's. The lease registers the
id with the center and heartbeats it (``register_client``); closing the
session releases it (``unregister_client``): the center deletes every key
only this client asked for, including results of tasks still running, which
it deletes as they arrive. A client that dies without closing (kill -9, a
vanished host) stops heartbeating, and the center releases it after its
``client_timeout`` (``distributed_core.timeouts``, 300 s by default).

Centers from before issue 10 do not know ``register_client``: the lease then
does nothing, and closing deletes what the session knows of, as before.

Each call to the center is bounded by the session's ``center_timeout``;
the release on close by the ``timeout`` given to :meth:`Lease.close`.
"""

from __future__ import annotations

import asyncio
import logging

from distributed_core import cancel_and_wait

__all__ = ["Lease"]

logger = logging.getLogger("distributed_client")

#: seconds between heartbeats until the center says how often it wants them
FIRST_INTERVAL = 1.0


class Lease:
    """Registration and heartbeats of one session with its center.

    `session` provides ``id``, ``name``, ``center_address`` and
    ``center_call(op, retry=..., **kwargs)``.
    """

    def __init__(self, session):
        self.session = session
        #: None until the center answered; False for a center without leases
        self.supported: bool | None = None
        #: seconds between heartbeats (what the center asked for)
        self.interval = FIRST_INTERVAL
        #: the center's client_timeout, once known
        self.client_timeout: float | None = None
        self._task: asyncio.Task | None = None

    def __repr__(self) -> str:
        return f"<Lease {self.session.id} supported={self.supported}>"

    def start(self) -> None:
        """Register and heartbeat in the background (on the running loop)."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self.heartbeat()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the center is away: its timeout is longer than ours
                logger.info("heartbeat to center %s failed: %s", self.session.center_address, e)
            if self.supported is False:
                return
            await asyncio.sleep(self.interval)

    async def heartbeat(self) -> None:
        """One ``register_client`` call (bounded by ``center_timeout``)."""
        s = self.session
        try:
            reply = await s.center_call("register_client", client=s.id, name=s.name)
        except ValueError as e:
            if "unknown op" not in str(e):
                raise
            self.supported = False
            logger.info(
                "center %s keeps no client leases (older than issue 10): data of this "
                "client is deleted only by the client itself",
                s.center_address,
            )
            return
        if not isinstance(reply, dict):
            raise TypeError(f"center answered register_client with {reply!r:.100}")
        self.supported = True
        interval = reply.get("heartbeat_interval")
        if isinstance(interval, (int, float)) and interval > 0:
            self.interval = float(interval)
        self.client_timeout = reply.get("client_timeout")
        if reply.get("expired"):
            logger.warning(
                "the center %s released this client (%s) after %ss without a heartbeat; "
                "its data on the cluster was deleted",
                s.center_address,
                s.id,
                self.client_timeout,
            )

    async def close(self, release: bool = True, timeout: float = 5.0) -> None:
        """Stop heartbeating; with `release`, have the center delete this
        client's data now (waiting at most `timeout` seconds)."""
        task, self._task = self._task, None
        if task is not None:  # bounded even if the task swallows a cancel
            if await cancel_and_wait([task]):
                logger.warning("the client's heartbeat task did not stop when cancelled")
        if not release or self.supported is False:
            return
        s = self.session
        try:
            reply = await asyncio.wait_for(
                s.center_call("unregister_client", client=s.id, retry=False), timeout
            )
        except Exception as e:
            if "unknown op" not in str(e):
                logger.info(
                    "could not release this client's data on %s (%s); the center "
                    "releases it after its client_timeout",
                    s.center_address,
                    e,
                )
            return
        if isinstance(reply, dict) and reply.get("released"):
            logger.debug("center deleted %s keys of client %s", reply["released"], s.id)
