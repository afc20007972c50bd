"""Values on disk: the slow side of the worker's store.

`SpillBuffer` is ``zict.Buffer(fast=dict, slow=Func(dump, load, File(dir)))``
with least-recently-used eviction (as dask.distributed's), keyed by any
hashable key. Values are written with the project's own serialization
(`distributed_core.dumps`: msgpack with out-of-band buffers, pickle protocol
5), so a numpy array goes to disk without a copy and comes back as an array
over the bytes read. A value that cannot be serialized stays in memory,
pinned (logged once), and is never lost.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import tempfile
from collections.abc import Hashable, Iterator, MutableMapping
from typing import Any

import zict

from distributed_core import dumps, loads

__all__ = ["SpillBuffer", "dump", "load"]

logger = logging.getLogger("distributed_worker.spill")

_COUNT = struct.Struct("<I")
_LENGTH = struct.Struct("<Q")


def dump(value: Any) -> list:
    """Frames to write for `value`: a header of frame lengths, then the frames."""
    frames = dumps(value)
    header = _COUNT.pack(len(frames)) + b"".join(_LENGTH.pack(memoryview(f).nbytes) for f in frames)
    return [header, *frames]


def load(data) -> Any:
    """Inverse of `dump`, given the bytes of the file (no copy of the buffers)."""
    view = memoryview(data)
    (n,) = _COUNT.unpack_from(view, 0)
    offset = _COUNT.size
    lengths = [_LENGTH.unpack_from(view, offset + i * _LENGTH.size)[0] for i in range(n)]
    offset += n * _LENGTH.size
    frames = []
    for length in lengths:
        frames.append(view[offset : offset + length])
        offset += length
    frames[0] = bytes(frames[0])  # msgpack head: small
    return loads(frames)


class _Files(MutableMapping):
    """`zict.File` under any hashable key (File wants str): one file per key."""

    def __init__(self, directory: str):
        self.file = zict.File(directory)
        self.names: dict = {}
        self.sizes: dict = {}  # bytes on disk per key
        self._next = 0

    def __setitem__(self, key, frames) -> None:
        name = self.names.get(key)
        if name is None:
            name = self.names[key] = f"k{self._next}"
            self._next += 1
        self.file[name] = frames
        self.sizes[key] = sum(memoryview(f).nbytes for f in frames)

    def __getitem__(self, key):
        return self.file[self.names[key]]

    def __delitem__(self, key) -> None:
        name = self.names.pop(key)
        self.sizes.pop(key, None)
        del self.file[name]

    def __contains__(self, key) -> bool:
        return key in self.names

    def __iter__(self) -> Iterator:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


class _Unspillable(Exception):
    def __init__(self, key, cause):
        super().__init__(f"cannot spill {key!r}: {cause}")
        self.key = key
        self.cause = cause


class _Slow(zict.Func):
    def __init__(self, files: _Files):
        super().__init__(dump, load, files)
        self.files = files

    def __setitem__(self, key, value) -> None:
        try:
            frames = dump(value)
        except Exception as e:
            raise _Unspillable(key, e) from e
        self.files[key] = frames


class SpillBuffer(MutableMapping):
    """A mapping that keeps at most `target` bytes in memory, the rest on disk.

    `weight(key)` gives each value's size (measured once, when stored).
    `directory` None makes a temporary directory, removed by `close`.
    """

    def __init__(self, target: int, weight, directory: str | None = None):
        self._own_dir = directory is None
        if directory is None:
            directory = tempfile.mkdtemp(prefix="dworker-spill-")
        else:
            os.makedirs(directory, exist_ok=True)
            directory = tempfile.mkdtemp(prefix="dworker-spill-", dir=directory)
        self.directory = directory
        self.files = _Files(directory)
        self.slow = _Slow(self.files)
        self._weight = weight
        self.buffer = zict.Buffer({}, self.slow, n=target, weight=lambda k, v: weight(k))
        self.pinned: dict = {}  # values that cannot be serialized: always in memory
        self._warned: set = set()

    # -- mapping -----------------------------------------------------------------

    def __setitem__(self, key: Hashable, value: Any) -> None:
        self.pinned.pop(key, None)
        try:
            self.buffer[key] = value
        except _Unspillable as e:
            self._pin(e)
            self.evict_until_below_target()

    def __getitem__(self, key: Hashable) -> Any:
        if key in self.pinned:
            return self.pinned[key]
        return self.buffer[key]

    def __delitem__(self, key: Hashable) -> None:
        if key in self.pinned:
            del self.pinned[key]
        else:
            del self.buffer[key]

    def __contains__(self, key) -> bool:
        return key in self.pinned or key in self.buffer

    def __iter__(self) -> Iterator:
        yield from self.pinned
        yield from self.buffer

    def __len__(self) -> int:
        return len(self.pinned) + len(self.buffer)

    # -- memory --------------------------------------------------------------------

    @property
    def target(self) -> float:
        return self.buffer.n

    @property
    def memory_bytes(self) -> int:
        """Managed bytes in memory (pinned values included)."""
        return int(self.buffer.fast.total_weight) + sum(self._weight(k) for k in self.pinned)

    @property
    def spilled_bytes(self) -> int:
        """Bytes of the values on disk, as measured in memory."""
        return sum(self._weight(k) for k in self.files.names)

    @property
    def disk_bytes(self) -> int:
        """Bytes the spilled values take on disk."""
        return sum(self.files.sizes.values())

    def spilled(self) -> list:
        return list(self.files.names)

    def evict(self) -> int:
        """Move the least recently used value to disk; its size, or 0 if none could be."""
        while len(self.buffer.fast):
            try:
                _, _, weight = self.buffer.fast.evict()
                return int(weight)
            except _Unspillable as e:
                self._pin(e)
        return 0

    def set_target(self, target: float) -> None:
        """Change the bytes kept in memory; moves values to disk if now above it."""
        self.buffer.n = target
        self.evict_until_below_target()

    def evict_until_below_target(self) -> None:
        while self.buffer.fast.total_weight > self.buffer.n and self.evict():
            pass

    def _pin(self, e: _Unspillable) -> None:
        key = e.key
        value = self.buffer.fast[key]
        del self.buffer[key]  # from memory, without spilling it
        self.pinned[key] = value
        if type(e.cause) not in self._warned:
            self._warned.add(type(e.cause))
            logger.warning(
                "value %r (%s) cannot be serialized, so it stays in memory: %s",
                key, type(value).__name__, e.cause,
            )  # fmt: skip

    def close(self) -> None:
        """Forget everything; remove the spill directory."""
        self.pinned.clear()
        try:
            self.buffer.fast.d.clear()
        except Exception:
            pass
        shutil.rmtree(self.directory, ignore_errors=True)
