"""Pending add_keys/remove_keys reports, coalesced into few stream messages.

Pure and synchronous. The worker records every change to its store here; the
report stream (`distributed_worker.stream`) takes the pending changes a few
milliseconds later, or as soon as the batch is large, and sends them as at
few messages. Changes to the same key cancel out: the last one wins.

A key stored for a client (whose id came in the hello of the connection that
asked for it) is reported in an ``add_keys`` message carrying that
``client``, one message per client; the Center uses it to release a client's
data when the client leaves (issue 10). Centers that do not know the field
ignore it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["ReportBatch"]


class ReportBatch:
    """Key additions and removals not yet sent to the Center.

    >>> b = ReportBatch(max_keys=100)
    >>> b.add({"x": 8, "y": 16})
    >>> b.remove(["y", "z"])
    >>> b.take()
    [{'op': 'remove_keys', 'keys': ['y', 'z']}, {'op': 'add_keys', 'keys': ['x'], 'nbytes': {'x': 8}}]
    >>> len(b)
    0
    >>> b.add({"a": 1}, client="c1")
    >>> b.add({"b": 2})
    >>> b.take()
    [{'op': 'add_keys', 'keys': ['b'], 'nbytes': {'b': 2}}, {'op': 'add_keys', 'keys': ['a'], 'nbytes': {'a': 1}, 'client': 'c1'}]
    """

    def __init__(self, max_keys: int = 1000) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, got {max_keys}")
        self.max_keys = max_keys
        self.adds: dict = {}
        self.removes: dict = {}  # an ordered set
        self.owners: dict = {}  # key -> client id, for added keys stored for a client

    def __len__(self) -> int:
        return len(self.adds) + len(self.removes)

    @property
    def full(self) -> bool:
        """True when the batch should be sent now rather than after a delay."""
        return len(self) >= self.max_keys

    def add(self, nbytes: Mapping, client: str | None = None) -> None:
        """Record that the keys of `nbytes` (``{key: size}``) are now held,
        for `client` (an id) when given."""
        for key, n in nbytes.items():
            self.removes.pop(key, None)
            self.adds[key] = n
            if client is not None:
                self.owners[key] = client
            elif self.owners:
                self.owners.pop(key, None)

    def remove(self, keys: Iterable) -> None:
        """Record that `keys` are no longer held."""
        owners = self.owners
        for key in keys:
            self.adds.pop(key, None)
            self.removes[key] = None
            if owners:
                owners.pop(key, None)

    def clear(self) -> None:
        """Forget everything pending (a fresh registration carries all keys)."""
        self.adds = {}
        self.removes = {}
        self.owners = {}

    def take(self) -> list[dict]:
        """Return the stream messages for everything pending, and clear it."""
        messages = []
        if self.removes:
            messages.append({"op": "remove_keys", "keys": list(self.removes)})
        if self.adds and not self.owners:
            messages.append({"op": "add_keys", "keys": list(self.adds), "nbytes": self.adds})
        elif self.adds:
            groups: dict = {}  # client (None: nobody's) -> {key: nbytes}
            owners = self.owners
            for key, n in self.adds.items():
                groups.setdefault(owners.get(key), {})[key] = n
            for client, nbytes in sorted(groups.items(), key=lambda kv: kv[0] is not None):
                msg = {"op": "add_keys", "keys": list(nbytes), "nbytes": nbytes}
                if client is not None:
                    msg["client"] = client
                messages.append(msg)
        self.clear()
        return messages
