"""The worker's data store: values by key, their sizes, and stored failures.

Pure and synchronous: no I/O, no event loop. The worker owns one `DataStore`
and touches it only from its event loop thread.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from distributed_core import Failure

from .sizeof import sizeof

__all__ = ["DataStore", "sizeof", "check_key", "check_keys"]


def check_key(key: Any) -> Hashable:
    """Return `key` if it can name a value, else raise `TypeError` saying why."""
    try:
        hash(key)
    except TypeError:
        raise TypeError(
            f"a key must be hashable (str, bytes, int or a tuple of those), "
            f"got {type(key).__name__}: {key!r:.100}"
        ) from None
    return key


def check_keys(keys: Any, name: str = "keys") -> list:
    """Return `keys` as a list, raising `TypeError` for a non-collection.

    A bare string or bytes is refused rather than iterated character by
    character: pass ``['x']``, not ``'x'``.
    """
    if isinstance(keys, (str, bytes)) or not isinstance(keys, Iterable):
        raise TypeError(
            f"{name} must be a list of keys, got {type(keys).__name__}: "
            f"{keys!r:.100}; wrap a single key in a list"
        )
    if isinstance(keys, Mapping):
        keys = list(keys)
    return [check_key(k) for k in keys]


class DataStore:
    """Values held by a worker, with their sizes.

    A failure is stored like any other value (a `distributed_core.Failure`)
    and is listed in `failures`, so that whoever gathers the key gets the
    exception back.

    >>> s = DataStore()
    >>> s.put("x", b"abc")
    3
    >>> s.get(["x"])
    {'x': b'abc'}
    >>> s.total_nbytes
    3

    Parameters
    ----------
    target
        bytes of values to keep in memory; beyond it the least recently used
        go to disk (a `SpillBuffer` in `local_directory`, or a temporary
        directory). None (default): everything stays in memory.
    local_directory
        where the spill directory is made (default: the system's temporary
        directory). It is removed by `close`.
    """

    def __init__(self, target: int | None = None, local_directory: str | None = None) -> None:
        self.nbytes: dict = {}
        self.spill = None
        if target is not None:
            from .spill import SpillBuffer  # zict: only with a memory limit

            self.spill = SpillBuffer(target, self.nbytes.__getitem__, local_directory)
            self.data = self.spill
        else:
            self.data: dict = {}
        self.failures: set = set()
        self.total_nbytes = 0

    def __contains__(self, key: Any) -> bool:
        return key in self.data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: Any) -> Any:
        return self.data[key]

    def keys(self) -> list:
        """The keys held, as a list."""
        return list(self.data)

    def put(self, key: Any, value: Any) -> int:
        """Store `value` under `key` (replacing any old value); return its size."""
        check_key(key)
        self._discard(key)
        n = sizeof(value)
        self.nbytes[key] = n
        self.data[key] = value
        self.total_nbytes += n
        if isinstance(value, Failure):
            self.failures.add(key)
        return n

    def update(self, data: Mapping) -> dict:
        """Store every item of `data`; return ``{key: nbytes}``."""
        if not isinstance(data, Mapping):
            raise TypeError(f"data must be a dict {{key: value}}, got {type(data).__name__}")
        for key in data:
            check_key(key)
        return {key: self.put(key, value) for key, value in data.items()}

    def get(self, keys: Iterable, allow_missing: bool = False) -> dict:
        """Return ``{key: value}`` for `keys`.

        Raises `KeyError` naming every missing key, unless `allow_missing`, in
        which case missing keys are left out of the result.
        """
        keys = check_keys(keys)
        missing = [k for k in keys if k not in self.data]
        if missing and not allow_missing:
            raise KeyError(
                f"worker does not hold {len(missing)} of the {len(keys)} keys "
                f"asked for: {_preview(missing)}"
            )
        return {k: self.data[k] for k in keys if k in self.data}

    def delete(self, keys: Iterable) -> list:
        """Drop `keys`; return the ones that were held (others are ignored)."""
        return [k for k in check_keys(keys) if self._discard(k)]

    def missing(self, keys: Iterable) -> list:
        """The keys among `keys` that are not held, in order, without repeats."""
        return [k for k in dict.fromkeys(keys) if k not in self.data]

    def snapshot(self) -> tuple[list, dict]:
        """``(keys, {key: nbytes})`` of everything held, for (re-)registration."""
        return list(self.data), dict(self.nbytes)

    def memory(self) -> dict:
        """``{'managed', 'spilled', 'spilled_disk'}``: bytes of values in memory,
        of values on disk (as measured in memory) and what those take on disk."""
        if self.spill is None:
            return {"managed": self.total_nbytes, "spilled": 0, "spilled_disk": 0}
        return {
            "managed": self.spill.memory_bytes,
            "spilled": self.spill.spilled_bytes,
            "spilled_disk": self.spill.disk_bytes,
        }

    def evict(self) -> int:
        """Move the least recently used value in memory to disk; its size (0: none)."""
        return self.spill.evict() if self.spill is not None else 0

    def set_target(self, target: float) -> None:
        """Keep at most `target` bytes of values in memory from now on."""
        if self.spill is not None:
            self.spill.set_target(target)

    def close(self) -> None:
        """Drop everything; remove the spill directory."""
        if self.spill is not None:
            self.spill.close()
        self.data = {}
        self.nbytes.clear()
        self.failures.clear()
        self.total_nbytes = 0

    def _discard(self, key: Any) -> bool:
        if key not in self.data:
            return False
        del self.data[key]
        self.total_nbytes -= self.nbytes.pop(key)
        self.failures.discard(key)
        return True


def _preview(keys: list, limit: int = 10) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    if len(keys) > limit:
        shown += f", ... ({len(keys) - limit} more)"
    return shown
