"""Pending add_keys/remove_keys reports, coalesced into few stream messages.

Pure and synchronous. The worker records every change to its store here; the
report stream (`distributed_worker.stream`) takes the pending changes a few
milliseconds later, or as soon as the batch is large, and sends them as at
most two messages. Changes to the same key cancel out: the last one wins.
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
    """

    def __init__(self, max_keys: int = 1000) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, got {max_keys}")
        self.max_keys = max_keys
        self.adds: dict = {}
        self.removes: dict = {}  # an ordered set

    def __len__(self) -> int:
        return len(self.adds) + len(self.removes)

    @property
    def full(self) -> bool:
        """True when the batch should be sent now rather than after a delay."""
        return len(self) >= self.max_keys

    def add(self, nbytes: Mapping) -> None:
        """Record that the keys of `nbytes` (``{key: size}``) are now held."""
        for key, n in nbytes.items():
            self.removes.pop(key, None)
            self.adds[key] = n

    def remove(self, keys: Iterable) -> None:
        """Record that `keys` are no longer held."""
        for key in keys:
            self.adds.pop(key, None)
            self.removes[key] = None

    def clear(self) -> None:
        """Forget everything pending (a fresh registration carries all keys)."""
        self.adds = {}
        self.removes = {}

    def take(self) -> list[dict]:
        """Return the stream messages for everything pending, and clear it."""
        messages = []
        if self.removes:
            messages.append({"op": "remove_keys", "keys": list(self.removes)})
        if self.adds:
            messages.append({"op": "add_keys", "keys": list(self.adds), "nbytes": self.adds})
        self.clear()
        return messages
