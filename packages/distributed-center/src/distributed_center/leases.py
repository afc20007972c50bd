"""Which client asked for which key, so that a client's data leaves with it.

Pure and synchronous, like :mod:`distributed_center.state` (which holds one
:class:`Leases` as ``CenterState.leases``); the I/O lives in
:mod:`distributed_center.clients`.

A client registers (and heartbeats) with its id; workers report the keys they
store for it (``add_keys`` with ``client``, issue 10). When the client
unregisters, or sends no heartbeat for ``client_timeout`` seconds, the keys
only it asked for are released: the Center deletes them on the workers. Keys
reported later for a client that is gone (results of tasks still running when
it left) are deleted as they arrive. Pinned keys (:meth:`Leases.pin`, for
named datasets that outlive their client) are never released this way.

Memory: a Center may hold millions of keys, so ``owner`` maps a key to the
id *string* of its one client in the common case (one object per client,
shared by all its keys, as ``who_has`` shares worker addresses), and to a
``set`` of ids only for a key two clients asked for (the same pure key).
Keys nobody asked for (scattered by a client from before issue 10, replicas,
keys a worker registered with) have no entry at all.

>>> t = [0.0]
>>> leases = Leases(clock=lambda: t[0])
>>> leases.heartbeat("c1")
False
>>> leases.own("c1", ["x", "y"])
[]
>>> leases.own("c2", ["y"])
[]
>>> t[0] = 31.0
>>> leases.expired(30.0)
['c1', 'c2']
>>> leases.release("c1")
['x']
>>> leases.own("c1", ["z"])  # a result arriving after its client left
['z']
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable

__all__ = ["ClientInfo", "Leases", "check_client"]

#: clients remembered as gone (released), oldest forgotten first: a result
#: that arrives for a gone client is deleted, so this bounds how many clients
#: may leave with tasks still running (about 100 bytes each)
MAX_GONE = 100_000


class ClientInfo:
    """What the Center knows about one client."""

    __slots__ = ("id", "last_seen", "name", "nkeys", "registered")

    def __init__(self, client: str, last_seen: float, name=None, registered: bool = True):
        self.id = client  # the one string object shared by all its keys in ``owner``
        self.name = name
        self.last_seen = last_seen
        #: False for a client known only from keys reported for it (it has
        #: not registered yet, or registered with a center that restarted)
        self.registered = registered
        #: how many entries of ``Leases.owner`` name it (release stops when all are found)
        self.nkeys = 0

    def __repr__(self) -> str:
        return f"<ClientInfo {self.id} name={self.name!r}>"


def check_client(client) -> str:
    """`client` if it is a usable client id (a non-empty str), else TypeError."""
    if not isinstance(client, str) or not client:
        raise TypeError(
            f"client must be a non-empty string (the client's id), got "
            f"{type(client).__name__} {client!r:.80}"
        )
    return client


class Leases:
    """Clients, the keys each asked for, and the keys pinned beyond them.

    Parameters
    ----------
    clock
        monotonic clock for heartbeats (``time.monotonic``); tests pass a fake.
    max_gone
        how many released client ids are remembered (see `MAX_GONE`).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_gone: int = MAX_GONE):
        self.clock = clock
        self.max_gone = max_gone
        #: client id -> ClientInfo, for clients alive (or not yet timed out)
        self.clients: dict[str, ClientInfo] = {}
        #: key -> client id (one client) or set of ids (several)
        self.owner: dict[Hashable, str | set[str]] = {}
        #: released client ids, oldest first (an ordered set)
        self.gone: dict[str, None] = {}
        #: key -> how many times it was pinned (datasets naming it)
        self.pinned: dict[Hashable, int] = {}

    def __repr__(self) -> str:
        return f"<Leases clients={len(self.clients)} keys={len(self.owner)}>"

    # ------------------------------------------------------------------ clients

    def heartbeat(self, client: str, name=None) -> bool:
        """Register `client`, or note that it is alive.

        Returns True if the client had been released (it timed out, yet is
        alive): its data is gone, and it is registered afresh.
        """
        client = check_client(client)
        was_gone = self.gone.pop(client, False) is None
        info = self.clients.get(client)
        if info is None:
            info = self.clients[client] = ClientInfo(client, self.clock(), name)
        info.registered = True
        if name is not None:
            info.name = name
        info.last_seen = self.clock()
        return was_gone

    def expired(self, timeout: float) -> list[str]:
        """Clients from which no heartbeat arrived for more than `timeout` seconds."""
        deadline = self.clock() - timeout
        return [c for c, info in self.clients.items() if info.last_seen < deadline]

    def excuse(self, seconds: float) -> None:
        """Do not count the last `seconds` against any client (the center was paused)."""
        if seconds <= 0:
            return
        now = self.clock()
        for info in self.clients.values():
            info.last_seen = min(info.last_seen + seconds, now)

    def release(self, client: str) -> list:
        """Forget `client`; return the keys only it asked for that are not pinned.

        The caller deletes them on the workers. Keys reported for the client
        from now on are returned by :meth:`own` for deletion. Costs a pass
        over the keys that have a client, newest first, that stops once all
        of this client's keys were found (none for a client without keys).
        """
        client = check_client(client)
        info = self.clients.pop(client, None)
        self.gone.pop(client, None)
        self.gone[client] = None
        while len(self.gone) > self.max_gone:
            del self.gone[next(iter(self.gone))]
        if info is None or info.nkeys <= 0:
            return []  # every key reported for a client made it known, and counted
        owner = self.owner
        pinned = self.pinned
        freed = []
        shared = []
        left = info.nkeys
        # newest first: a short-lived client's keys are near the end
        for key, ids in reversed(owner.items()):
            if ids.__class__ is str:
                if ids != client:
                    continue
                freed.append(key)
            elif client in ids:
                shared.append(key)
            else:
                continue
            left -= 1
            if not left:
                break
        for key in freed:
            del owner[key]
        for key in shared:
            ids = owner[key]
            ids.discard(client)
            if len(ids) == 1:
                (other,) = ids
                info = self.clients.get(other)
                owner[key] = info.id if info is not None else other
        return [k for k in freed if k not in pinned] if pinned else freed

    # ------------------------------------------------------------------ keys

    def own(self, client: str, keys: Iterable) -> list:
        """Record that `keys` were stored for `client`.

        Returns the keys to delete now: those of a client already released,
        unless another client asked for them too or they are pinned. A client
        not seen before is added unregistered; it is released like any other
        if it sends no heartbeat within the timeout.
        """
        client = check_client(client)
        owner = self.owner
        if client in self.gone:
            return [k for k in keys if k not in owner and k not in self.pinned]
        info = self.clients.get(client)
        if info is None:
            info = self.clients[client] = ClientInfo(client, self.clock(), registered=False)
        cid = info.id
        added = 0
        for key in keys:
            ids = owner.get(key)
            if ids is None:
                owner[key] = cid
            elif ids.__class__ is str:
                if ids == cid:
                    continue
                owner[key] = {ids, cid}
            elif cid in ids:
                continue
            else:
                ids.add(cid)
            added += 1
        info.nkeys += added
        return []

    def forget(self, key: Hashable) -> None:
        """`key` has no holder any more: drop its client entry (not its pin)."""
        ids = self.owner.pop(key, None)
        if ids is None:
            return
        clients = self.clients
        for client in (ids,) if ids.__class__ is str else ids:
            info = clients.get(client)
            if info is not None:
                info.nkeys -= 1

    def keys_of(self, client: str) -> list:
        """The keys `client` asked for that are still held (one pass over all)."""
        return [
            k
            for k, ids in self.owner.items()
            if (ids == client if ids.__class__ is str else client in ids)
        ]

    def pin(self, keys: Iterable) -> None:
        """Never release `keys` with a client (a named dataset refers to them).

        Pins count: a key pinned twice needs two :meth:`unpin` calls.
        """
        pinned = self.pinned
        for key in keys:
            pinned[key] = pinned.get(key, 0) + 1

    def unpin(self, keys: Iterable) -> list:
        """Undo one :meth:`pin` of each of `keys`; return those no longer pinned at all.

        Keys not pinned are ignored. An unpinned key is not deleted here.
        """
        pinned = self.pinned
        free = []
        for key in keys:
            n = pinned.get(key)
            if n is None:
                continue
            if n <= 1:
                del pinned[key]
                free.append(key)
            else:
                pinned[key] = n - 1
        return free
