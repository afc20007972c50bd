"""The Center's side of client leases: no data left behind by a client (issue 10).

The bookkeeping is :class:`~distributed_center.leases.Leases` (pure, on
``CenterState.leases``); this module is the thin I/O around it, used by
:class:`~distributed_center.Center`:

* ``register_client(client, name=None)`` registers a client or notes that it
  is alive (clients call it every ``heartbeat_interval`` of the answer). The
  answer is ``{'client_timeout': s, 'heartbeat_interval': s, 'expired': bool}``;
  ``expired`` says the client had been released (it was silent for longer
  than ``client_timeout``) and its data is gone.
* ``unregister_client(client)`` releases the client now: ``{'released': n}``
  keys deleted.
* ``add_keys`` messages on a worker's report stream carry ``client`` for keys
  stored for a client; keys of a released client are deleted as they arrive.
* Every liveness round, clients silent for ``client_timeout`` are released.

Releasing deletes, on every holder, each key that only that client asked for
and that is not pinned (``CenterState.pin``): like ``delete_data``, the keys
leave the Center's tables at once and holders that cannot be reached are
ignored.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .leases import check_client

__all__ = ["ClientTracker"]

logger = logging.getLogger("distributed_center")


class ClientTracker:
    """Client registration, heartbeats and release for one `Center`.

    Parameters
    ----------
    center
        the `Center` (its ``state``, ``events`` and ``delete_data`` are used).
    client_timeout
        seconds without a heartbeat after which a client is released.
    """

    def __init__(self, center, client_timeout: float):
        if not client_timeout > 0:
            raise ValueError(f"client_timeout must be positive, got {client_timeout!r}")
        self.center = center
        self.leases = center.state.leases
        self.client_timeout = float(client_timeout)
        #: deletions in progress (kept so that close can wait for them)
        self._tasks: set[asyncio.Task] = set()

    @property
    def handlers(self) -> dict:
        """The ops this adds to the Center."""
        return {
            "register_client": self.register_client,
            "unregister_client": self.unregister_client,
        }

    @property
    def heartbeat_interval(self) -> float:
        """How often clients are asked to heartbeat: a sixth of ``client_timeout``."""
        return self.client_timeout / 6

    # ------------------------------------------------------------------ ops

    def register_client(self, comm, client, name=None) -> dict:
        """Register `client` (or note that it is alive); see the module docstring."""
        known = client in self.leases.clients
        expired = self.leases.heartbeat(client, name)
        if expired:
            logger.warning(
                "Client %s came back after being released (no heartbeat for %gs); its "
                "data was deleted",
                client,
                self.client_timeout,
            )
        elif not known:
            logger.info("Registered client %s (name=%r)", client, name)
        return {
            "client_timeout": self.client_timeout,
            "heartbeat_interval": self.heartbeat_interval,
            "expired": expired,
        }

    async def unregister_client(self, comm, client) -> dict:
        """Release `client` now: ``{'released': number of keys deleted}``."""
        return {"released": await self.release(check_client(client), "it closed")}

    # ------------------------------------------------------------------ hooks

    def added(self, address: str, msg: dict) -> None:
        """An ``add_keys`` batch from `address`'s report stream was applied."""
        client = msg.get("client")
        if client is None:
            return
        doomed = self.leases.own(client, msg.get("keys", ()))
        if doomed:
            logger.info(
                "Deleting %d keys %s stored for client %s, which has left",
                len(doomed),
                address,
                client,
            )
            self._spawn(self._delete(doomed))

    def check(self) -> list[str]:
        """Release the clients silent for ``client_timeout``; return their ids."""
        expired = self.leases.expired(self.client_timeout)
        for client in expired:
            # forgotten now (a later round does not see it again), deleted in the background
            keys = self._release(client, f"no heartbeat for {self.client_timeout:g}s")
            if keys:
                self._spawn(self._delete(keys))
        return expired

    async def release(self, client: str, reason: str) -> int:
        """Forget `client` and delete the keys only it asked for; return how many."""
        keys = self._release(client, reason)
        if keys:
            await self._delete(keys)
        return len(keys)

    def _release(self, client: str, reason: str) -> list:
        keys = self.leases.release(client)
        logger.info("Released client %s (%s): deleting %d keys", client, reason, len(keys))
        self.center.events.add(
            "client-released",
            None,
            f"client {client} released: {reason}",
            client=client,
            keys=len(keys),
        )
        return keys

    async def close(self) -> None:
        """Cancel deletions still in progress (the center is closing)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ------------------------------------------------------------------ internals

    async def _delete(self, keys: list) -> Any:
        return await self.center.delete_data(None, keys)

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("Releasing client data failed", exc_info=task.exception())
